"""``mq-queue``: every command on a queue holding every state, its JSON against the documented
schema, its exit statuses, and ids that try to leave the queue.

The tests that take ``built`` or ``queue_backend`` run on both queues (the directory queue,
the database queue). Those about files in a queue directory (stray files, ids that are
paths) take ``built_directory``; those about the command line alone (settings, usage, the
reference page, a closed pipe) take a directory queue, the queue being no part of them.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from built_queues import REFUSED, commit, make_settings
from queue_backends import queue_args, queue_settings

from mq_transaction import MessageQueue, cli_queue, queue_admin
from mq_transaction.cli_format import visible
from mq_transaction.exit_status import QueueExit
from mq_transaction.queuefile import Envelope
from mq_transaction.sender import Sender
from mq_transaction.states import STATES, MessageState

MQ_QUEUE = [sys.executable, "-m", "mq_transaction.cli_queue"]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "mq-queue.md"
NOT_IDS = ["../x", "/etc/passwd", ".hidden", "new/20261128T151136123456Z-9f3a2b1c0d", "..", "x\ny"]
ABSENT = "20261128T151136123456Z-9f3a2b1c0d"


@pytest.fixture(autouse=True)
def keep_logging_levels():
    """main() sets up logging as the real command does; give other tests their levels back."""
    logger = logging.getLogger("mq_transaction")
    level = logger.level
    yield
    logger.setLevel(level)


def run(capsys, built, *args):
    """Run mq-queue in-process on the built queue; return (status, stdout, stderr)."""
    return run_on(capsys, built.queue, *args)


def run_on(capsys, queue, *args):
    """Run mq-queue in-process on ``queue``; return (status, stdout, stderr)."""
    status = cli_queue.main([*queue_args(queue), *args])
    out, err = capsys.readouterr()
    return status, out, err


def ini_settings(queue) -> str:
    """The ini file lines naming ``queue``."""
    return "".join(f"{key} = {value}\n" for key, value in queue_settings(queue).items())


def run_mq_queue(*args, stdin=subprocess.DEVNULL):
    return subprocess.run(
        [*MQ_QUEUE, *map(str, args)], capture_output=True, text=True, stdin=stdin, timeout=60, check=False
    )


def state_of(built, queue_id):
    try:
        return queue_admin.find(built.queue, queue_id).state
    except queue_admin.MessageNotFoundError:
        return None


# -- the documented JSON schemas, checked by hand (no jsonschema dependency) ------------


def documented_schema(command: str) -> dict:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"### The schema of `{command} --json`.*?```json\n(.*?)\n```", text, re.DOTALL)
    assert match, f"docs/mq-queue.md has no JSON Schema for {command} --json"
    return json.loads(match.group(1))


JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
}


def schema_problems(value, schema: dict, where: str = "$") -> list[str]:
    """What in ``value`` breaks ``schema`` (the keywords our schemas use: type, enum,
    pattern, minimum, properties, required, additionalProperties, items)."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(JSON_TYPES[kind](value) for kind in kinds):
            return [f"{where}: {value!r} is not of type {kinds}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if JSON_TYPES["number"](value) and "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{where}: {value!r} is below {schema['minimum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        problems += [f"{where}: no key {key!r}" for key in schema.get("required", []) if key not in value]
        if schema.get("additionalProperties") is False:
            problems += [f"{where}: unknown key {key!r}" for key in value if key not in properties]
        for key, item in value.items():
            if key in properties:
                problems += schema_problems(item, properties[key], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{where}[{index}]")
    return problems


def test_the_schema_checker_finds_what_is_wrong():
    schema = documented_schema("list")
    good = {
        "id": ABSENT,
        "state": "queued",
        "queued_at": "2026-11-28T16:55:07.459938Z",
        "attempts": 0,
        "next_attempt": None,
        "sender": "a@example.com",
        "recipients": [{"address": "b@example.org", "status": "pending", "reply": None}],
        "message_id": None,
        "subject": None,
        "size": 1,
        "last_error": None,
    }
    assert schema_problems([good], schema) == []
    bad = [
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "size"},
        {**good, "attempts": "1"},
        {**good, "attempts": True},
        {**good, "state": "lost"},
        {**good, "queued_at": "2026-11-28 16:55:07"},
        {**good, "recipients": [{"address": "b@example.org", "status": "gone", "reply": None}]},
    ]
    for item in bad:
        assert schema_problems([item], schema), item


def test_the_list_schema_names_exactly_the_fields_list_gives():
    items = documented_schema("list")["items"]
    assert tuple(items["required"]) == queue_admin.LIST_FIELDS
    assert set(items["properties"]) == set(queue_admin.LIST_FIELDS)
    assert items["properties"]["state"]["enum"] == list(STATES)


# -- list -------------------------------------------------------------------------------


def test_list_json_of_every_state_matches_the_documented_schema(capsys, built):
    status, out, err = run(capsys, built, "list", "--json")
    assert status == 0, err
    records = json.loads(out)
    assert schema_problems(records, documented_schema("list")) == []
    assert {r["state"]: r["id"] for r in records} == built.ids
    for record in records:
        assert list(record) == list(queue_admin.LIST_FIELDS)


@pytest.mark.slow
def test_list_json_from_an_ini_file_in_a_subprocess(tmp_path, built):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[app:main]\nuse = egg:nothing\n{ini_settings(built.queue)}")
    done = run_mq_queue(ini, "list", "--json", "--state", MessageState.FAILED)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    assert schema_problems([record], documented_schema("list")) == []
    assert record["id"] == built.ids[MessageState.FAILED] and record["last_error"] == REFUSED
    assert [r["status"] for r in record["recipients"]] == ["delivered", "failed"]


def test_list_is_one_plain_line_per_message_without_a_terminal(capsys, built):
    status, out, _err = run(capsys, built, "list")
    assert status == 0
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [[built.ids[state], state] for state in STATES]


def test_list_is_a_table_at_a_terminal(capsys, built, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    status, out, _err = run(capsys, built, "list", "--state", MessageState.DEFERRED)
    assert status == 0
    header, row = out.splitlines()
    assert header.split()[:2] == ["ID", "STATE"] and "LAST ERROR" in header
    assert row.split()[:2] == [built.ids[MessageState.DEFERRED], MessageState.DEFERRED] and "in " in row


def test_list_of_an_empty_state_prints_nothing(capsys, built):
    run(capsys, built, "discard", "--yes", built.ids[MessageState.CORRUPT])
    assert run(capsys, built, "list", "--state", MessageState.CORRUPT) == (0, "", "")
    assert run(capsys, built, "list", "--state", MessageState.CORRUPT, "--json")[1] == "[]\n"


# -- status -----------------------------------------------------------------------------


def test_status_json_matches_the_documented_schema(capsys, built):
    status, out, err = run(capsys, built, "status", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert schema_problems(report, documented_schema("status")) == []
    assert report["counts"] == dict.fromkeys(STATES, 1)
    assert report["last_failure"]["id"] == built.ids[MessageState.FAILED]


def test_status_exits_1_when_a_waiting_message_is_older_than_warn_age(capsys, built):
    status, out, _err = run(capsys, built, "status", "--warn-age", "0")
    assert status == 1
    assert "over_warn_age 4" in out.splitlines()
    status, out, _err = run(capsys, built, "status", "--warn-age", "1h")
    assert status == 0 and "over_warn_age 0" in out.splitlines()
    assert run(capsys, built, "status", "--warn-age", "1h", "--json")[0] == 0


@pytest.mark.slow
def test_status_as_a_monitoring_check_in_a_subprocess(built):
    done = run_mq_queue(*queue_args(built.queue), "status", "--warn-age", "0")
    assert done.returncode == 1
    assert "failed 1" in done.stdout.splitlines() and done.stderr == ""


def test_status_without_a_delivery_log_says_unknown_when_the_queue_records_no_delivery(capsys, queue_backend):
    commit(queue_backend.queue, ("ann@example.org",), "Waiting")
    status = cli_queue.main([*queue_backend.args, "status"])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert "last_delivery unknown" in out and "last_failure none" in out and "queued 1" in out


def write_stray_files(built) -> list[str]:
    """A README in hold/ and an id-shaped name with an impossible date in new/."""
    strays = [
        str(Path(built.queue.path) / "hold" / "README"),
        str(Path(built.queue.path) / "new" / "20261399T151136123456Z-9f3a2b1c0d"),
    ]
    for path in strays:
        Path(path).write_text("not a message\n")
    return strays


def warnings_for(paths: list[str]) -> list[str]:
    return [f"mq-queue: warning: {path} is not a message (its name is not a queue id); skipped" for path in paths]


def test_files_that_are_not_messages_are_skipped_by_list_with_one_warning_each(capsys, built_directory):
    """Directory only: files in the queue's directories (a table holds nothing but messages)."""
    built = built_directory
    strays = write_stray_files(built)
    status, out, err = run(capsys, built, "list")
    assert status == 0
    assert [line.split()[:2] for line in out.splitlines()] == [[built.ids[state], state] for state in STATES]
    assert err.splitlines() == warnings_for(sorted(strays))
    status, out, err = run(capsys, built, "list", "--json")
    assert status == 0 and [r["id"] for r in json.loads(out)] == [built.ids[state] for state in STATES]
    assert err.splitlines() == warnings_for(sorted(strays))
    status, out, err = run(capsys, built, "list", "--state", MessageState.HELD)
    assert status == 0 and out.split()[:2] == [built.ids[MessageState.HELD], MessageState.HELD]
    assert err.splitlines() == warnings_for([strays[0]])  # only hold/ was looked at


def test_status_counts_no_file_that_is_not_a_message_and_names_each(capsys, built_directory):
    """Directory only: files in the queue's directories."""
    built = built_directory
    strays = write_stray_files(built)
    status, out, err = run(capsys, built, "status")
    assert status == 0
    assert "held 1" in out.splitlines() and "queued 1" in out.splitlines() and "total 6" in out.splitlines()
    assert "not_messages 2" in out.splitlines()
    assert err.splitlines() == warnings_for(sorted(strays))
    status, out, err = run(capsys, built, "status", "--json")
    report = json.loads(out)
    assert status == 0 and schema_problems(report, documented_schema("status")) == []
    assert report["not_messages"] == sorted(strays) and report["total"] == 6


@pytest.mark.slow
def test_files_that_are_not_messages_in_a_subprocess_give_no_traceback(built_directory):
    """Directory only: files in the queue's directories."""
    built = built_directory
    strays = write_stray_files(built)
    for command in ("list", "status"):
        done = run_mq_queue("--queue-dir", built.queue.path, command)
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == warnings_for(sorted(strays))


def test_an_id_shaped_name_with_an_impossible_date_is_not_a_queue_id_for_show(capsys, built_directory):
    """Directory only: a file with that name in new/."""
    built = built_directory
    write_stray_files(built)
    status, out, err = run(capsys, built, "show", "20261399T151136123456Z-9f3a2b1c0d")
    assert status == 2 and out == ""
    assert "'20261399T151136123456Z-9f3a2b1c0d' is not a queue id" in err


def test_bad_warn_age_is_a_usage_error(capsys, built):
    with pytest.raises(SystemExit) as caught:
        run(capsys, built, "status", "--warn-age", "soon")
    assert caught.value.code == 2
    assert "'soon' is not a duration" in capsys.readouterr().err


# -- show -------------------------------------------------------------------------------


def test_show_prints_the_envelope_the_attempts_and_the_headers(capsys, built):
    status, out, _err = run(capsys, built, "show", built.ids[MessageState.FAILED])
    assert status == 0
    for expected in ("state:        failed", "failure:      rejected", "attempts:", "headers:"):
        assert expected in out
    assert "  Subject: Partly delivered" in out.splitlines()
    assert "bad@example.org: 550 5.1.1 no such user" in out


@pytest.mark.parametrize("state", STATES)
def test_show_works_in_every_state(capsys, built, state):
    status, out, _err = run(capsys, built, "show", built.ids[state])
    assert status == 0
    assert f"state:        {state}" in out


def test_show_raw_prints_the_stored_message_byte_for_byte(capsysbinary, built):
    _envelope, message = built.queue.read(built.queue.find(built.ids[MessageState.QUEUED]))
    assert cli_queue.main([*queue_args(built.queue), "show", built.ids[MessageState.QUEUED], "--raw"]) == 0
    assert capsysbinary.readouterr().out == message


@pytest.mark.slow
def test_show_raw_in_a_subprocess_with_a_config_uri_fragment(tmp_path, built):
    ini = tmp_path / "app.ini"
    mail_section = f"[app:mail]\nuse = egg:x\n{ini_settings(built.queue)}"
    ini.write_text(f"[app:main]\nuse = egg:x\nmq.queue_dir = /nowhere\n\n{mail_section}")
    done = subprocess.run(
        [*MQ_QUEUE, f"{ini}#mail", "show", built.ids[MessageState.HELD], "--raw"], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == built.queue.read(built.queue.find(built.ids[MessageState.HELD]))[1]


def test_show_of_an_id_not_in_the_queue_exits_1(capsys, built):
    status, out, err = run(capsys, built, "show", ABSENT)
    assert (status, out) == (1, "")
    assert err == f"mq-queue: error: queue id {ABSENT} is not in the queue at {built.queue.location}\n"


# -- control characters ----------------------------------------------------------------

ESC_SUBJECT = "Pay now \x1b]0;owned\x07\x1b[2J\u202eevil"  # sets the window title, clears the screen
ESC_REPLY = "550 5.1.1 \x1b[31mno such user\x07"
ESC_ADDRESS = "e\x1b[8mve\x07@example.org"


def hostile_queue(queue_backend, smtp_sink) -> tuple[Any, str, str]:
    """A failed message whose subject and server reply (from a real SMTP server, recorded by a
    real mq-send run) hold ESC and BEL, and a queued one whose envelope address does (as a
    file in the queue directory or a row can; send() refuses such an address)."""
    queue = queue_backend.queue
    message = f"From: app@example.com\r\nTo: ann@example.org\r\nSubject: {ESC_SUBJECT}\r\n\r\nHi\r\n".encode()
    failed = queue.enqueue(Envelope.new("app@example.com", ["ann@example.org"], time.time(), "<e@x>"), message)
    smtp_sink.behaviour.rcpt_replies["ann@example.org"] = ESC_REPLY
    Sender(make_settings(queue, smtp_sink.port), queue=queue).run()
    assert queue.find(failed).state == MessageState.FAILED
    queued = queue.enqueue(Envelope.new("app@example.com", [ESC_ADDRESS], time.time(), "<f@x>"), b"Subject: x\r\n\r\nx")
    return queue, failed, queued


def test_list_and_show_render_control_characters_visibly_and_json_stays_exact(
    capsys, queue_backend, smtp_sink, monkeypatch
):
    queue, failed, queued = hostile_queue(queue_backend, smtp_sink)
    recorded = json.loads(run_on(capsys, queue, "list", "--json")[1])
    assert [r["id"] for r in recorded] == [queued, failed]
    assert recorded[1]["subject"] == ESC_SUBJECT  # JSON: exact
    assert recorded[0]["recipients"][0]["address"] == ESC_ADDRESS  # JSON: exact
    reply = recorded[1]["recipients"][0]["reply"]  # as mq-send recorded the server's reply
    assert reply.startswith("550")
    outputs = [
        run_on(capsys, queue, "list")[1],
        run_on(capsys, queue, "show", failed)[1],
        run_on(capsys, queue, "show", queued)[1],
    ]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "400")
    outputs.append(run_on(capsys, queue, "list")[1])
    for out in outputs:
        assert not any(c in out for c in "\x1b\x07\r\u202e"), out
    plain, show_failed, show_queued, table = outputs
    assert "\\x1b]0;owned\\x07\\x1b[2J\\u202eevil" in plain  # the plain lines' logfmt escapes
    assert "e\\x1b[8mve\\x07@example.org" in plain
    assert f"subject:      {visible(ESC_SUBJECT)}" in show_failed.splitlines()
    assert f"  Subject: {visible(ESC_SUBJECT)}" in show_failed.splitlines()
    assert f"ann@example.org: {visible(reply)}" in show_failed
    assert visible(ESC_ADDRESS) in show_queued and "\\x1b[8m" in show_queued
    assert visible(ESC_ADDRESS) in table and visible(ESC_SUBJECT)[:20] in table


def test_lines_that_changes_print_render_control_characters_visibly(capsys, queue_backend, smtp_sink):
    queue, _failed, queued = hostile_queue(queue_backend, smtp_sink)
    status, out, _err = run_on(capsys, queue, "discard", "--yes", queued)
    assert status == 0 and "\x1b" not in out and visible(ESC_ADDRESS) in out


# -- every command in every state -------------------------------------------------------

# (command, state) -> (exit status, the message's state afterwards; None: removed)
EXPECTED = {
    ("retry", MessageState.QUEUED): (0, MessageState.QUEUED),
    ("retry", MessageState.SENDING): (1, MessageState.SENDING),
    ("retry", MessageState.DEFERRED): (0, MessageState.QUEUED),
    ("retry", MessageState.HELD): (1, MessageState.HELD),
    ("retry", MessageState.FAILED): (0, MessageState.QUEUED),
    ("retry", MessageState.CORRUPT): (1, MessageState.CORRUPT),
    ("hold", MessageState.QUEUED): (0, MessageState.HELD),
    ("hold", MessageState.SENDING): (1, MessageState.SENDING),
    ("hold", MessageState.DEFERRED): (0, MessageState.HELD),
    ("hold", MessageState.HELD): (0, MessageState.HELD),
    ("hold", MessageState.FAILED): (0, MessageState.HELD),
    ("hold", MessageState.CORRUPT): (1, MessageState.CORRUPT),
    ("release", MessageState.QUEUED): (1, MessageState.QUEUED),
    ("release", MessageState.SENDING): (1, MessageState.SENDING),
    ("release", MessageState.DEFERRED): (1, MessageState.DEFERRED),
    ("release", MessageState.HELD): (0, MessageState.QUEUED),
    ("release", MessageState.FAILED): (1, MessageState.FAILED),
    ("release", MessageState.CORRUPT): (1, MessageState.CORRUPT),
    **{("discard", state): (0, None) for state in STATES if state != MessageState.SENDING},
    ("discard", MessageState.SENDING): (1, MessageState.SENDING),
}


@pytest.mark.parametrize(("command", "state"), sorted(EXPECTED))
def test_every_command_in_every_state(capsys, built, command, state):
    expected_status, expected_state = EXPECTED[command, state]
    queue_id = built.ids[state]
    others = {s: i for s, i in built.ids.items() if s != state}
    extra = ["--yes"] if command == "discard" else []
    status, out, err = run(capsys, built, command, queue_id, *extra)
    assert status == expected_status, (out, err)
    assert state_of(built, queue_id) == expected_state
    if status == 0:
        assert out.startswith(f"{queue_id}: ") and err == ""
    else:
        assert out == "" and err.startswith(f"mq-queue: error: queue id {queue_id} ") and err.count("\n") == 1
    assert {s: state_of(built, i) for s, i in others.items()} == {s: s for s in others}  # nothing else moved


def test_a_missing_id_among_others_exits_1_and_the_others_are_done(capsys, built):
    status, out, err = run(capsys, built, "hold", ABSENT, built.ids[MessageState.QUEUED])
    assert status == 1
    assert out == f"{built.ids[MessageState.QUEUED]}: queued -> held\n"
    assert err == f"mq-queue: error: queue id {ABSENT} is not in the queue at {built.queue.location}\n"


def test_retry_all_failed_and_all_deferred(capsys, built):
    status, out, _err = run(capsys, built, "retry", "--all-failed", "--all-deferred")
    assert status == 0 and len(out.splitlines()) == 2
    assert (
        state_of(built, built.ids[MessageState.FAILED])
        == state_of(built, built.ids[MessageState.DEFERRED])
        == MessageState.QUEUED
    )
    assert run(capsys, built, "retry", "--all-failed") == (0, "no failed message to retry\n", "")


def test_retry_needs_ids_or_a_state(capsys, built):
    with pytest.raises(SystemExit) as caught:
        run(capsys, built, "retry")
    assert caught.value.code == 2


def test_retry_of_a_partly_delivered_failed_message_reaches_only_the_undelivered_recipient(capsys, built, smtp_sink):
    queue_id = built.ids[MessageState.FAILED]
    status, out, _err = run(capsys, built, "retry", queue_id)
    assert status == 0
    assert (
        out == f"{queue_id}: failed -> queued; to be sent to bad@example.org (already delivered to ann@example.org)\n"
    )
    Sender(built.settings, queue=built.queue).run()  # what cron's next mq-send run does
    arrived = [m.rcpt_tos for m in smtp_sink.received if b"Subject: Partly delivered" in m.content]
    assert arrived == [["ann@example.org"], ["bad@example.org"]]  # the first run, then the retry
    assert state_of(built, queue_id) is None


# -- ids that are not queue ids ---------------------------------------------------------


@pytest.mark.parametrize("value", NOT_IDS)
@pytest.mark.parametrize("command", ["show", "retry", "hold", "release", "discard"])
def test_a_value_that_is_not_a_queue_id_is_refused_and_nothing_is_done(capsys, built, command, value):
    before = {s: state_of(built, i) for s, i in built.ids.items()}
    ids = [value] if command == "show" else [built.ids[MessageState.QUEUED], value]
    extra = ["--yes"] if command == "discard" else []
    status, out, err = run(capsys, built, command, *ids, *extra)
    assert (status, out) == (2, "")
    assert err.startswith(f"mq-queue: error: {value!r} is not a queue id") and err.count("\n") == 1
    assert {s: state_of(built, i) for s, i in built.ids.items()} == before


@pytest.mark.slow
@pytest.mark.parametrize("value", ["../x", "/etc/passwd", ".hidden", "new/ID"])
def test_path_traversal_ids_are_refused_by_the_real_command(tmp_path, built_directory, value):
    """Directory only: ids that are paths out of the queue's directories (the in-process test
    above refuses them on both queues)."""
    built = built_directory
    victim = tmp_path / "x"
    victim.write_text("not mail")
    value = value.replace("ID", built.ids[MessageState.QUEUED])
    for command in (["show", value], ["discard", "--yes", value], ["hold", value]):
        done = run_mq_queue(*queue_args(built.queue), *command)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.startswith("mq-queue: error: ") and done.stderr.count("\n") == 1
        assert "Traceback" not in done.stderr
    assert victim.read_text() == "not mail" and state_of(built, built.ids[MessageState.QUEUED]) == MessageState.QUEUED


# -- discard ----------------------------------------------------------------------------


def test_discard_without_yes_and_without_a_terminal_removes_nothing_and_exits_2(built):
    done = run_mq_queue(
        *queue_args(built.queue), "discard", built.ids[MessageState.QUEUED], built.ids[MessageState.FAILED]
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "--yes" in done.stderr and "Nothing was removed" in done.stderr
    assert (
        state_of(built, built.ids[MessageState.QUEUED]) == MessageState.QUEUED
        and state_of(built, built.ids[MessageState.FAILED]) == MessageState.FAILED
    )


def test_discard_in_process_without_a_terminal_needs_yes(capsys, built, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # input there, but no terminal
    status, _out, err = run(capsys, built, "discard", built.ids[MessageState.QUEUED])
    assert status == 2 and "--yes" in err
    assert state_of(built, built.ids[MessageState.QUEUED]) == MessageState.QUEUED


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(("answer", "removed"), [("y\n", True), ("yes\n", True), ("n\n", False), ("", False)])
def test_discard_at_a_terminal_asks_first(capsys, built, monkeypatch, answer, removed):
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    status, out, _err = run(capsys, built, "discard", built.ids[MessageState.DEFERRED])
    assert "Discard 1 message(s) for good? [y/N]" in out
    assert out.startswith(f"{built.ids[MessageState.DEFERRED]} deferred ")  # what would go, listed first
    assert status == (0 if removed else 1)
    assert state_of(built, built.ids[MessageState.DEFERRED]) == (None if removed else MessageState.DEFERRED)
    if not removed:
        assert out.endswith("Nothing was removed.\n")


def test_discard_prints_and_logs_what_it_removed(capsys, built, caplog):
    caplog.set_level(logging.INFO, logger="mq_transaction.operator")
    message_id = queue_admin.list_given(built.queue, [built.ids[MessageState.FAILED]])[0].message_id
    status, out, _err = run(capsys, built, "discard", "--yes", built.ids[MessageState.FAILED])
    assert status == 0
    for text in (out, *(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)):
        assert built.ids[MessageState.FAILED] in text and message_id in text
        assert "ann@example.org (delivered), bad@example.org (failed)" in text


# -- settings and usage -----------------------------------------------------------------


@pytest.mark.slow
def test_the_config_uri_is_optional_before_the_command(tmp_path, built):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[app:main]\nuse = egg:x\n{ini_settings(built.queue)}")
    for args in (
        [ini, "show", built.ids[MessageState.QUEUED]],
        [*queue_args(built.queue), "show", built.ids[MessageState.QUEUED]],
    ):
        done = run_mq_queue(*args)
        assert done.returncode == 0, done.stderr
        assert built.ids[MessageState.QUEUED] in done.stdout


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ("mq.queue_dir = {queue}\nmq.smtp_prot = 25", "mq.smtp_prot"),
        ("mq.queue_dir = /does/not/exist", "/does/not/exist"),
    ],
)
def test_a_configuration_error_is_one_line_with_status_2(tmp_path, settings, names):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[app:main]\nuse = egg:x\n{settings.format(queue=tmp_path)}\n")
    done = run_mq_queue(ini, "status")
    assert done.returncode == 2
    assert done.stderr.startswith("mq-queue: error: ") and done.stderr.count("\n") == 1 and names in done.stderr


def test_no_queue_dir_at_all_is_a_configuration_error(capsys):
    assert cli_queue.main(["list"]) == 2
    assert "mq.queue_dir" in capsys.readouterr().err


# -- the reference page -----------------------------------------------------------------


def test_mq_queue_help_in_the_reference_is_the_real_one(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    real = cli_queue.build_parser().format_help()
    match = re.search(r"```text\n(usage: mq-queue.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert match, "docs/mq-queue.md has no ```text block starting with 'usage: mq-queue'"
    assert match.group(1).split() == real.split(), f"paste `COLUMNS=80 mq-queue --help`:\n{real}"


def test_every_option_of_every_command_is_in_the_reference():
    text = DOCS.read_text(encoding="utf-8")
    parser = cli_queue.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, subparser in [("", parser), *commands.choices.items()]:
        assert name == "" or re.search(rf"^### .*`{name}`", text, re.MULTILINE), f"no section for {name}"
        for action in subparser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}" in text or f"[{option}" in text, f"docs/mq-queue.md lacks {name} {option}"


def test_every_exit_status_is_in_the_reference():
    text = DOCS.read_text(encoding="utf-8")
    rows = set()
    for line in text.split("| status | when |", 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.add(line.split("|")[1].strip())
    assert rows == {f"`{int(s)}`" for s in QueueExit}


def test_the_config_uri_slot_knows_every_command():
    parser = cli_queue.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert tuple(commands.choices) == cli_queue.COMMANDS


@pytest.mark.slow
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """The pipe is under test, not the queue: a directory queue only."""
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    for number in range(400):  # more output than a pipe holds
        commit(queue, (f"u{number}@example.org",), f"message {number}")
    process = subprocess.Popen(
        [*MQ_QUEUE, "--queue-dir", queue.path, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout.readline().split()[1] == b"queued"
    process.stdout.close()  # as `mq-queue list | head -1` does
    assert process.wait(timeout=60) == 1
    assert process.stderr.read() == b""
    process.stderr.close()
