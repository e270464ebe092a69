"""Release readiness: the built wheel installs and runs on its own; the quick start works as written."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mq_transaction

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_stated_once_and_installed_metadata_agrees():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", mq_transaction.__version__)
    assert importlib.metadata.version("mq_transaction") == mq_transaction.__version__
    assert '"0.' not in (ROOT / "setup.py").read_text()  # no second, literal version there
    assert f"({mq_transaction.__version__})" in (ROOT / "CHANGELOG.md").read_text()


def test_the_project_is_mit_licensed():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert importlib.metadata.metadata("mq_transaction")["License"] == "MIT"


def test_every_module_the_quick_start_runs_is_installed_by_an_earlier_step():
    """``python -m X`` in the quick start must not need a package the reader never installed."""
    text = (ROOT / "docs" / "quickstart.md").read_text()
    commands = [line.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in block.splitlines()]
    installed = {"pip", "venv", "mq_transaction", "mq_pyramid"}
    ran = []
    for command in commands:
        match = re.match(r"python -m pip install (.+)", command)
        if match:
            installed.update(re.split(r"[\s\[=<>]", word.strip("\"'"))[0] for word in match.group(1).split())
            continue
        match = re.match(r"python -m (\S+)", command)
        if match:
            ran.append(match.group(1))
            assert match.group(1) in installed, f"the quick start runs {command!r} before installing it"
    assert "aiosmtpd" in ran  # the step this check was written for is still there


@pytest.mark.slow
def test_the_built_wheel_installs_into_a_fresh_venv_and_both_commands_run(tmp_path):
    """``make dist``'s steps, then the wheel alone in a new virtual environment."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    assert f"-{mq_transaction.__version__}-" in wheel.name
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], check=True)
    for command in ("mq-send", "mq-queue"):
        result = subprocess.run([str(venv / "bin" / command), "--help"], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: " + command)
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mq_transaction; print(mq_transaction.__version__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert version.stdout.strip() == mq_transaction.__version__
