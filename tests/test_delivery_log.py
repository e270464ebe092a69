"""The delivery log: lines as mq-send writes them, read back as mq-queue status reads them."""

from __future__ import annotations

import json

import pytest

from mq_transaction.delivery_log import (
    DeliveryLog,
    event_record,
    format_logfmt,
    logfmt_unquote,
    logfmt_value,
    parse_line,
    read_backwards,
)
from mq_transaction.hooks import DeliveryEvent, RecipientResult

HOSTILE_REPLY = '451 4.3.0 "busy"\x1b[2J\x07 status=delivered\r\nX: y\\n \u202e\u2028\x85\t\U0001f600'


def deferred_event(reply: str, queue_id: str = "20261128T151136123456Z-9f3a2b1c0d") -> DeliveryEvent:
    return DeliveryEvent(
        state="deferred",
        queue_id=queue_id,
        message_id="<a@b>",
        sender="app@example.com",
        recipients=(
            RecipientResult("ann@example.org", "delivered", "250 ok", True),
            RecipientResult("bob@example.org", "deferred", reply, True),
        ),
        attempt=2,
        queued_at=1795878696.0,
        next_attempt=1795879000.0,
        reason=None,
    )


@pytest.mark.parametrize("reply", ['451 4.3.0 "busy" status=delivered', HOSTILE_REPLY])
def test_delivery_log_lines_parse_back_in_both_formats(reply):
    record = event_record(deferred_event(reply), 1795878700.0)
    for fmt, line in (("logfmt", format_logfmt(record)), ("json", json.dumps(record))):
        parsed = parse_line(line, fmt)
        assert parsed["time"] == record["time"] and parsed["queue_id"] == record["queue_id"]
        assert parsed["state"] == "deferred"
        assert [(r["address"], r["status"], r["reply"]) for r in parsed["recipients"]] == [
            ("ann@example.org", "delivered", "250 ok"),
            ("bob@example.org", "deferred", reply),
        ]
    assert parse_line("not a record", "logfmt") is None
    assert parse_line("{not json", "json") is None


def test_a_logfmt_line_holds_no_control_character_whatever_the_reply():
    line = format_logfmt(event_record(deferred_event(HOSTILE_REPLY), 1795878700.0))
    assert line.isprintable() and "\\x1b[2J\\x07" in line and "\\r\\n" in line
    assert "\\u202e\\u2028\\x85\\t" in line and "\\\\n" in line  # a backslash in the reply stays a backslash


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("plain", "plain"),
        ("", '""'),
        ("two words", '"two words"'),
        ('a "quote" and a \\', '"a \\"quote\\" and a \\\\"'),
        ("key=value", '"key=value"'),
        ("bell\x07", '"bell\\x07"'),
        ("\u202eevil", '"\\u202eevil"'),
        ("\U000e0001tag", '"\\U000e0001tag"'),
    ],
)
def test_logfmt_values_are_quoted_and_escaped_and_read_back_exactly(text, written):
    assert logfmt_value(text) == written
    assert logfmt_unquote(written) == text


def test_the_log_is_read_newest_first_across_read_blocks(tmp_path):
    path = tmp_path / "delivery.log"
    log = DeliveryLog(str(path))
    ids = [f"20261128T1511361234{n:02d}Z-9f3a2b1c0d" for n in range(50)]
    try:
        for n, queue_id in enumerate(ids):
            log.write(deferred_event(HOSTILE_REPLY, queue_id), 1795878700.0 + n)
    finally:
        log.close()
    records = list(read_backwards(str(path), "logfmt", block=97))  # lines cross block boundaries
    assert [r["queue_id"] for r in records] == ids[::-1]
    assert {r["recipients"][1]["reply"] for r in records} == {HOSTILE_REPLY}
    assert list(read_backwards(str(tmp_path / "missing.log"), "logfmt")) == []
