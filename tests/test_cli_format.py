"""mq-queue's text output (mq_transaction.cli_format): plain lines, tables, a message in full,
and control characters from messages, servers and file names shown, never acted on."""

from __future__ import annotations

import json

import pytest
from built_queues import REFUSED, build_queue

from mq_transaction import queue_admin
from mq_transaction.cli_format import (
    format_details,
    format_list_lines,
    format_list_table,
    format_status,
    json_array_chunks,
    not_message_warning,
    visible,
)
from mq_transaction.states import MessageState


@pytest.fixture
def built(queue_backend, smtp_sink):
    """A queue holding every state: the directory queue, then the database queue."""
    made = build_queue(queue_backend, smtp_sink)
    yield made
    made.claim.release()


def test_plain_list_is_one_line_per_message_and_the_table_fits_the_terminal(built):
    records = queue_admin.list_messages(built.queue)
    lines = format_list_lines(records).splitlines()
    assert len(lines) == len(records)
    assert lines[0].startswith(f"{records[0].queue_id} {records[0].state} queued_at=")
    failed_line = next(line for line in lines if line.split()[1] == MessageState.FAILED)
    assert 'last_error="550 5.1.1 no such user"' in failed_line
    assert "recipients=ann@example.org:delivered,bad@example.org:failed" in failed_line
    table = format_list_table(records, width=100).splitlines()
    assert table[0].split()[:3] == ["ID", "STATE", "AGE"]
    assert len(table) == len(records) + 1 and all(len(line) <= 100 for line in table)


def test_status_text_for_pipes_and_for_terminals(built):
    report = queue_admin.queue_status(built.queue, warn_age=60)
    plain = dict(line.split(" ", 1) for line in format_status(report).splitlines())
    assert plain["failed"] == "1" and plain["total"] == "6" and plain["over_warn_age"] == "0"
    assert plain["oldest_id"] == built.ids[MessageState.DEFERRED]
    assert "not_messages" not in plain  # only when there are some
    table = format_status(report, tty=True)
    assert table.splitlines()[0].split() == ["STATE", "MESSAGES"]
    assert "last failure" in table and built.ids[MessageState.FAILED] in table


def test_details_text_has_the_envelope_then_the_attempts_then_the_headers(built):
    lines = format_details(queue_admin.details(built.queue, built.ids[MessageState.FAILED])).splitlines()
    assert ["bad@example.org", "failed", *REFUSED.split()] in [line.split() for line in lines]
    assert lines.index("attempts:") < lines.index("headers:") < lines.index("  Subject: Partly delivered")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, é and 日本", "plain text, é and 日本"),
        ("tab\tstays", "tab\tstays"),
        ("\x1b[2J\x07", "\\x1b[2J\\x07"),
        ("cr\rlf\n", "cr\\rlf\\n"),
        ("del\x7f c1\x85\x9b", "del\\x7f c1\\x85\\x9b"),
        ("bidi\u202eevil\u2066", "bidi\\u202eevil\\u2066"),
        ("lines\u2028\u2029", "lines\\u2028\\u2029"),
        ("tag\U000e0041", "tag\\U000e0041"),
    ],
)
def test_visible_shows_what_a_terminal_would_act_on_as_escapes(text, shown):
    assert visible(text) == shown


@pytest.mark.parametrize(
    "objects",
    [[], [{}], [{"a": 1}], [{"id": "x", "subject": "line\nbreak \u2028 é", "list": [1, {"b": None}]}, {"c": []}] * 3],
)
def test_the_streamed_json_array_is_what_json_dumps_writes(objects):
    assert "".join(json_array_chunks(objects)) == json.dumps(objects, indent=2, ensure_ascii=False)


def test_the_warning_for_a_file_that_is_no_message_names_it_visibly():
    warning = not_message_warning("/q/hold/READ\x1bME")
    assert warning == "mq-queue: warning: /q/hold/READ\\x1bME is not a message (its name is not a queue id); skipped"
