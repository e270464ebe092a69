"""The documentation states the code's public contract: flags, settings, states, metrics.

Each test reads a page of ``docs/`` and the code it describes, so a flag, a key, a state or
a metric added, renamed or removed in the code fails here until the page says so too.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from mq_transaction import MessageQueue, cli_send, settings, smtp, states
from mq_transaction.durations import parse_duration
from mq_transaction.exit_status import SendExit
from mq_transaction.metrics import Metrics

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: The pages that describe mq_transaction itself (the others belong to mq_pyramid or to
#: migrating, and may name other tools' settings).
CORE_PAGES = (
    "index",
    "quickstart",
    "api",
    "transactions",
    "queue",
    "mq-send",
    "configuration",
    "guarantees",
    "hooks",
    "operations",
)
#: Settings whose default is computed from others rather than a fixed value.
COMPUTED_DEFAULTS = {"smtp_port", "smtp_tls", "smtp_helo"}
#: Misspelt keys the pages show on purpose, in examples of the unknown-key error.
TYPO_EXAMPLES = {"smtp_prot"}


def page(name: str) -> str:
    return (DOCS / f"{name}.md").read_text(encoding="utf-8")


def table_rows(text: str, header_start: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header line starts with ``header_start``,
    each as a list of stripped cells (no cell of our tables holds a ``|``)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(header_start):
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip()[1:-1].split("|")])
            return rows
    raise AssertionError(f"no table whose header starts with {header_start!r}")


def long_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


# -- mq-send --------------------------------------------------------------------------


def test_every_mq_send_flag_is_in_its_reference():
    text = page("mq-send")
    missing = [flag for flag in long_flags(cli_send.build_parser()) if f"`{flag}" not in text]
    assert missing == [], f"docs/mq-send.md does not document {missing}"


def test_mq_send_reference_names_no_flag_that_does_not_exist():
    real = set(long_flags(cli_send.build_parser())) | {"--help"}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", page("mq-send")))
    assert named - real == set(), f"docs/mq-send.md names flags mq-send does not have: {sorted(named - real)}"


def test_mq_send_options_table_gives_each_flag_the_setting_it_overrides():
    parser = cli_send.build_parser()
    flags = long_flags(parser)
    # Give every option a value naming its destination, then see which mq.* key receives it.
    namespace = argparse.Namespace(**{action.dest: f"<{action.dest}>" for action in flags.values()})
    key_of_dest = {value[1:-1]: key for key, value in cli_send.overrides_from(namespace).items()}
    rows = {
        flag: row
        for row in table_rows(page("mq-send"), "| flag | setting |")
        for flag in re.findall(r"--[a-z][a-z-]*", row[0])
    }
    for flag, action in flags.items():
        assert flag in rows, f"the options table of docs/mq-send.md has no row for {flag}"
        key = key_of_dest.get(action.dest)
        expected = f"`{key}`" if key else ""
        assert rows[flag][1] == expected, f"{flag} overrides {key or 'no setting'}, the docs say {rows[flag][1]!r}"


def test_mq_send_help_in_the_reference_is_the_real_one(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    real = cli_send.build_parser().format_help()
    match = re.search(r"```text\n(usage: mq-send.*?)```", page("mq-send"), re.DOTALL)
    assert match, "docs/mq-send.md has no ```text block starting with 'usage: mq-send'"
    # Compared word by word: line wrapping differs between Python versions and terminals.
    assert match.group(1).split() == real.split(), (
        f"the --help block of docs/mq-send.md is out of date; paste the output of `COLUMNS=80 mq-send --help`:\n{real}"
    )


def test_every_exit_status_is_in_the_mq_send_reference():
    rows = {row[0] for row in table_rows(page("mq-send"), "| status | when |")}
    assert {f"`{int(status)}`" for status in SendExit} == rows


# -- configuration ----------------------------------------------------------------------


def configuration_rows() -> dict[str, list[str]]:
    rows = table_rows(page("configuration"), "| key | type | default | read by | meaning |")
    return {row[0].strip("`"): row for row in rows}


def test_every_setting_is_in_the_configuration_reference_and_nothing_else():
    documented = set(configuration_rows())
    real = {f"{settings.PREFIX}{name}" for name in settings.KEYS}
    assert real - documented == set(), f"docs/configuration.md does not list {sorted(real - documented)}"
    assert documented - real == set(), f"docs/configuration.md lists unknown keys {sorted(documented - real)}"


def test_every_setting_row_states_the_real_default():
    defaults = settings.Settings()
    for key, (_key, kind, default, read_by, meaning) in configuration_rows().items():
        name = key[len(settings.PREFIX) :]
        value = getattr(defaults, name)
        assert kind and read_by and meaning, f"{key}: a cell of its row is empty"
        if isinstance(value, bool):
            assert default == f"`{str(value).lower()}`", f"{key}: default is {value}, the docs say {default!r}"
        elif isinstance(value, int):
            assert default == f"`{value}`", f"{key}: default is {value}, the docs say {default!r}"
        elif isinstance(value, float):
            written = re.match(r"`([^`]+)`", default)
            assert written and parse_duration(written.group(1)) == value, f"{key}: default is {value}s, not {default!r}"
        elif isinstance(value, str):
            assert default == f"`{value}`", f"{key}: default is {value!r}, the docs say {default!r}"
        elif name not in COMPUTED_DEFAULTS:
            assert default.startswith("none"), f"{key}: it has no default, the docs say {default!r}"


def test_value_types_state_the_words_the_parsers_accept():
    from paste.deploy.converters import falsy, truthy

    rows = {row[0]: row[1] for row in table_rows(page("configuration"), "| type | written as |")}
    booleans = set(re.findall(r"`([^`]+)`", rows["boolean"]))
    assert booleans == set(truthy) | set(falsy), f"the boolean words are {sorted(set(truthy) | set(falsy))}"
    key_rows = configuration_rows()
    for name, words in (("smtp_tls", smtp.TLS_MODES), ("delivery_log_format", settings.LOG_FORMATS)):
        assert set(re.findall(r"`([^`]+)`", key_rows[settings.key(name)][1])) == set(words), (
            f"the type of {settings.key(name)} in docs/configuration.md is not {', '.join(words)}"
        )
    choices = {action.dest: action.choices for action in cli_send.build_parser()._actions if action.choices}
    assert tuple(choices["smtp_tls"]) == smtp.TLS_MODES
    assert tuple(choices["delivery_log_format"]) == settings.LOG_FORMATS


def test_the_error_examples_for_settings_are_the_real_messages():
    examples = re.findall(r"^ *mq-send: error: (mq\.\w+: .*)$", page("configuration") + page("mq-send"), re.MULTILINE)
    checked = 0
    for example in examples:
        typo = re.match(r"(mq\.\w+): unknown setting", example)
        if typo:
            raw = {"mq.queue_dir": "/q", typo.group(1): "x"}
        elif example.startswith("mq.smtp_tls: is none and mq.smtp_username is set"):
            host = re.search(r"network to (\S+) in clear", example).group(1)
            raw = {"mq.queue_dir": "/q", "mq.smtp_host": host, "mq.smtp_tls": "none", "mq.smtp_username": "app"}
        else:
            continue
        with pytest.raises(settings.ConfigurationError) as caught:
            settings.parse_settings(raw)
        assert str(caught.value) == example, f"the docs show {example!r}, mq-send says {str(caught.value)!r}"
        checked += 1
    assert checked >= 3, "the unknown-key and plaintext-AUTH examples are gone from the docs"


def test_core_pages_name_no_setting_that_does_not_exist():
    real = set(settings.KEYS) | TYPO_EXAMPLES
    for name in CORE_PAGES:
        named = set(re.findall(r"\bmq\.([a-z][a-z_]*[a-z])\b", page(name)))
        assert named - real == set(), f"docs/{name}.md names unknown settings {sorted(named - real)}"


# -- the queue ------------------------------------------------------------------------


def test_every_state_and_its_directory_are_a_row_of_the_states_table():
    rows = table_rows(page("queue"), "| state | directory |")
    pairs = {(row[0], row[1]) for row in rows}
    for state, directory in states.STATE_DIRS.items():
        assert (f"`{state}`", f"`{directory}/`") in pairs, f"docs/queue.md's states table lacks {state} ({directory}/)"
    assert any(row[1] == f"`{states.TMP_DIR}/`" for row in rows), "docs/queue.md's states table lacks tmp/"
    documented = {row[0].strip("`") for row in rows if row[1] != f"`{states.TMP_DIR}/`"}
    assert documented == set(states.STATES), f"docs/queue.md's states table has unknown states {documented}"


def test_every_transition_in_the_queue_docs_is_a_method_of_the_queue():
    rows = table_rows(page("queue"), "| transition | method of `MessageQueue` |")
    methods = {row[1].strip("`") for row in rows}
    unknown = [name for name in methods if not callable(getattr(MessageQueue, name, None))]
    assert unknown == [], f"docs/queue.md names transitions MessageQueue does not have: {unknown}"


# -- mq-queue -------------------------------------------------------------------------


def test_every_mq_queue_subcommand_is_in_its_reference():
    if importlib.util.find_spec("mq_transaction.cli_queue") is None:
        pytest.skip("mq_transaction/cli_queue.py does not exist yet")
    cli_queue = importlib.import_module("mq_transaction.cli_queue")
    build_parser = getattr(cli_queue, "build_parser", None)
    if not callable(build_parser):
        pytest.skip("mq_transaction.cli_queue has no build_parser()")
    subcommands = [
        name
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]
    assert subcommands, "mq-queue's parser has no subcommands"
    text = page("mq-queue")
    # A subcommand counts as documented when a code span or a heading names it.
    spans = re.findall(r"`([^`\n]+)`", text) + re.findall(r"^#+ (.*)$", text, re.MULTILINE)
    missing = [name for name in subcommands if not any(re.search(rf"\b{name}\b", span) for span in spans)]
    assert missing == [], f"docs/mq-queue.md does not document the subcommands {missing}"


# -- metrics --------------------------------------------------------------------------


def test_every_metric_is_in_the_operations_table_with_its_type_and_labels(tmp_path):
    metrics_file = tmp_path / "mq.prom"
    Metrics(str(metrics_file)).write(MessageQueue(tmp_path / "queue"))
    written = dict(re.findall(r"^# TYPE (\S+) (\S+)$", metrics_file.read_text(), re.MULTILINE))
    assert written, "the metrics file has no metric"
    rows = {row[0].strip("`"): row for row in table_rows(page("operations"), "| metric | type | labels | value |")}
    for name, kind in written.items():
        assert name in rows, f"docs/operations.md's metrics table lacks {name}"
        assert rows[name][1] == kind, f"{name} is a {kind}, the docs say {rows[name][1]}"
    assert set(rows) == set(written), (
        f"docs/operations.md lists metrics that are not written: {set(rows) - set(written)}"
    )
    for state in states.STATES:
        assert f"`{state}`" in rows["mq_messages"][2], f"the labels of mq_messages in the docs lack {state}"


# -- architecture ------------------------------------------------------------------------


def test_the_architecture_page_names_every_module():
    text = page("architecture")
    for package in ("mq_transaction", "mq_pyramid"):
        for module in sorted((DOCS.parent / package).glob("*.py")):
            if module.name in ("__init__.py", "_version.py"):
                continue
            assert module.name in text, f"docs/architecture.md does not say what {package}/{module.name} owns"
