"""``mq-queue``'s text output: plain lines for pipes, tables for terminals, a message in full.

Every text that comes from a message, a server or a file name goes through
:func:`visible`, so a subject, an address or a reply holding ESC, BEL, a carriage
return or a bidi control is shown as an escape, never acted on by the terminal. The JSON
output (``--json``) is written by the command line from the records' ``to_json()``,
exact and unescaped.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Iterator

from .delivery_log import logfmt_value
from .durations import format_duration, iso_utc
from .queue_admin import LastEvent, MessageDetails, MessageSummary, QueueStatus

_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char.isprintable() or char == "\t":
        return char
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape.

    Control characters (C0 but tab, DEL, C1), bidi controls, line and paragraph
    separators and other characters that are not printable become ``\\n``, ``\\r``,
    ``\\xHH`` or ``\\uHHHH`` (ESC is ``\\x1b``); everything else is left as it is.
    """
    if text.isprintable():
        return text
    return "".join(map(_escape, text))


def _shown(value: object) -> str:
    return "-" if value is None else visible(str(value))


def _text(value: object) -> str:
    return visible(str(value))


def not_message_warning(path: str) -> str:
    """The warning ``list`` and ``status`` give, once, for a file that is no message."""
    return f"mq-queue: warning: {visible(path)} is not a message (its name is not a queue id); skipped"


def list_line(r: MessageSummary) -> str:
    """One plain line for a message (for pipes and scripts): id, state, then ``key=value``
    pairs quoted and escaped as in the delivery log (``-`` for null)."""
    recipients = None
    if r.recipients is not None:
        recipients = ",".join(f"{x.address}:{x.status}" for x in r.recipients)
    pairs = {
        "queued_at": iso_utc(r.queued_at),
        "attempts": r.attempts,
        "next_attempt": None if r.next_attempt is None else iso_utc(r.next_attempt),
        "size": r.size,
        "sender": r.sender,
        "recipients": recipients,
        "message_id": r.message_id,
        "subject": r.subject,
        "last_error": r.last_error,
    }
    values = (logfmt_value("-" if v is None else str(v)) for v in pairs.values())
    return " ".join([r.queue_id, r.state, *(f"{k}={v}" for k, v in zip(pairs, values, strict=True))])


def format_list_lines(records: Iterable[MessageSummary]) -> str:
    """:func:`list_line` for each message, one a line."""
    return "\n".join(map(list_line, records))


def json_array_chunks(objects: Iterable[object]) -> Iterator[str]:
    """``json.dumps(list(objects), indent=2, ensure_ascii=False)``, written one object at a
    time, so a listing of a large queue starts at once and never holds it all."""
    first = True
    for item in objects:
        # json.dumps never writes a raw line break inside a string: every line is indented.
        text = json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        yield ("[\n  " if first else ",\n  ") + text
        first = False
    yield "[]" if first else "\n]"


def _table(header: list[str], rows: list[list[str]], width: int) -> str:
    """Columns padded to their widest cell; each line cut to the terminal's width."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(size) for cell, size in zip(row, widths, strict=True)).rstrip()
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    return "\n".join(lines)


def _cut(text: str | None, size: int) -> str:
    text = "-" if text is None else visible(" ".join(text.split()))
    return text if len(text) <= size else text[: size - 1] + "…"


def format_list_table(records: list[MessageSummary], now: float | None = None, width: int | None = None) -> str:
    """A table for a person at a terminal: age, schedule, first recipient, subject, last error."""
    now = time.time() if now is None else now
    width = width or shutil.get_terminal_size().columns
    if not records:
        return "no message"
    rows = []
    for r in records:
        recipients = r.recipients
        to = "-" if not recipients else recipients[0].address + (f" +{len(recipients) - 1}" if recipients[1:] else "")
        next_at = "-"
        if r.next_attempt is not None:
            wait = r.next_attempt - now
            next_at = f"in {format_duration(wait)}" if wait > 0 else "due"
        rows.append(
            [
                r.queue_id,
                r.state,
                format_duration(now - r.queued_at),
                "-" if r.attempts is None else str(r.attempts),
                next_at,
                _cut(to, 32),
                _cut(r.subject, 30),
                _cut(r.last_error, 40),
            ]
        )
    return _table(["ID", "STATE", "AGE", "TRIES", "NEXT", "TO", "SUBJECT", "LAST ERROR"], rows, width)


def _when(event: LastEvent | None, unknown: str) -> str:
    if event is None:
        return unknown
    where = "the delivery log" if event.source == "delivery_log" else "the queue"
    return f"{iso_utc(event.at)} (queue id {_text(event.queue_id or 'unknown')}, from {where})"


def format_status(report: QueueStatus, tty: bool = False) -> str:
    """``status`` as text: a table at a terminal, else ``name value`` lines (easy to grep).

    Files that are not messages add a ``not_messages N`` line (at a terminal, their paths).
    """
    oldest = report.oldest
    warn = report.warn_age_seconds
    if not tty:
        lines = [f"{state} {count}" for state, count in report.counts.items()]
        lines += [
            f"total {report.total}",
            f"oldest_id {oldest.queue_id if oldest else '-'}",
            f"oldest_age_seconds {oldest.age_seconds if oldest else 0}",
            f"last_delivery {iso_utc(report.last_delivery.at) if report.last_delivery else 'unknown'}",
            f"last_failure {iso_utc(report.last_failure.at) if report.last_failure else 'none'}",
        ]
        if warn is not None:
            lines.append(f"over_warn_age {report.over_warn_age}")
        if report.not_messages:
            lines.append(f"not_messages {len(report.not_messages)}")
        return "\n".join(lines)
    rows = [[state, str(count)] for state, count in report.counts.items()]
    lines = [_table(["STATE", "MESSAGES"], [*rows, ["total", str(report.total)]], 80), ""]
    if oldest:
        lines.append(
            f"oldest message  {oldest.queue_id} ({oldest.state}, queued {format_duration(oldest.age_seconds)} ago)"
        )
    else:
        lines.append("oldest message  none waiting")
    lines.append(f"last delivery   {_when(report.last_delivery, 'unknown')}")
    lines.append(f"last failure    {_when(report.last_failure, 'none on record')}")
    if warn is not None:
        lines.append(f"older than {format_duration(warn)}  {report.over_warn_age} waiting message(s)")
    for path in report.not_messages:
        lines.append(f"not a message   {visible(path)}")
    return "\n".join(lines)


def format_details(record: MessageDetails) -> str:
    """``show`` as text: the envelope, the attempt history, then the message headers."""
    summary = record.summary
    size = "unknown"
    if summary.size is not None:
        size = f"{summary.size} bytes"
    fields = [
        ("queue id", summary.queue_id),
        ("state", summary.state),
        ("queued at", iso_utc(summary.queued_at)),
        ("sender", summary.sender),
        ("message id", summary.message_id),
        ("subject", summary.subject),
        ("size", f"{size} (queue file {record.file_size} bytes)"),
        ("next attempt", None if summary.next_attempt is None else iso_utc(summary.next_attempt)),
        ("failure", record.failure_reason),
        ("last error", summary.last_error),
    ]
    lines = [f"{name + ':':<14}{_shown(value)}" for name, value in fields]
    if record.problem:
        lines.append(f"{'':<14}(show --raw prints the whole file)")
    lines.append("recipients:")
    recipients = [(visible(r.address), r) for r in summary.recipients or ()]
    width = max((len(address) for address, _r in recipients), default=0)
    for address, r in recipients:
        lines.append(f"  {address:<{width}}  {visible(r.status):<9}  {_shown(r.reply or None)}")
    if summary.recipients is None:
        lines.append("  unknown")
    lines.append("attempts:")
    for attempt in record.attempts:
        nxt = "" if attempt.next_attempt is None else f", next attempt {iso_utc(attempt.next_attempt)}"
        lines.append(f"  {attempt.number}. {iso_utc(attempt.at)} {_text(attempt.server)}: {_text(attempt.result)}{nxt}")
        for address, reply in attempt.replies.items():
            lines.append(f"       {_text(address)}: {_text(reply)}")
    if not record.attempts:
        lines.append("  none yet")
    lines.append("headers:")
    lines += [f"  {visible(line)}" for line in record.headers or ["unknown"]]
    return "\n".join(lines)
