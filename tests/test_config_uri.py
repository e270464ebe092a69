"""The CONFIG_URI argument of mq-send and mq-queue: a wrong one is named for what it is."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", ["mq_transaction.cli_send", "mq_transaction.cli_queue"])
def test_a_directory_given_as_the_ini_file_is_called_a_directory(tmp_path, command):
    argv = [sys.executable, "-m", command, str(tmp_path)]
    if command.endswith("cli_queue"):
        argv.append("status")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"CONFIG_URI: {tmp_path} is a directory, not an ini file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_ini_file_is_said_not_to_exist(tmp_path):
    missing = tmp_path / "production.ini"
    result = subprocess.run(
        [sys.executable, "-m", "mq_transaction.cli_send", str(missing)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"CONFIG_URI: {missing} does not exist" in result.stderr


def test_mq_queue_with_an_ini_file_and_no_command_asks_for_a_command(tmp_path):
    ini = tmp_path / "production.ini"
    ini.write_text("[app:main]\nmq.queue_dir = %(here)s/queue\n")
    result = subprocess.run(
        [sys.executable, "-m", "mq_transaction.cli_queue", str(ini)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"a COMMAND is required after CONFIG_URI {ini}: one of status, list" in result.stderr
    assert "invalid choice" not in result.stderr
