"""The delivery log: one line per message and attempt, logfmt (default) or JSON lines.

Written by ``mq-send`` (:class:`DeliveryLog`) and read back, newest first, by
``mq-queue status`` (:func:`read_backwards`). Both sides share one logfmt quoting
(:func:`logfmt_value`, :func:`logfmt_unquote`), also used by ``mq-queue list``'s plain lines.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

from .durations import iso_utc
from .hooks import DeliveryEvent
from .logfiles import LogFileHandler

#: The escapes inside a quoted logfmt value besides ``\\xHH``, ``\\uHHHH`` and ``\\UHHHHHHHH``.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_ESCAPE_SEQUENCE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.DOTALL)
_LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', re.DOTALL)


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def logfmt_value(text: str) -> str:
    """``text`` as a logfmt value: bare when it is plain, else in double quotes.

    A value is quoted when it is empty or holds a space, ``"``, ``=``, ``\\`` or a character
    that is not printable. Inside the quotes ``\\``, ``"``, newline, carriage return and tab
    are escaped as ``\\\\``, ``\\"``, ``\\n``, ``\\r``, ``\\t``, and every other character that
    is not printable (ESC, BEL, C1 controls, bidi controls, line separators) as ``\\xHH``,
    ``\\uHHHH`` or ``\\UHHHHHHHH``: a line never holds a raw control character, and
    :func:`logfmt_unquote` gives the text back exactly.
    """
    if text.isprintable():
        if text and not any(c in text for c in ' "=\\'):
            return text
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return '"' + "".join(map(_escape, text)) + '"'


def _unescape(match: re.Match) -> str:
    code = match.group(1)
    if len(code) > 1:
        return chr(int(code[1:], 16))
    return _UNESCAPES.get(code, code)


def logfmt_unquote(value: str) -> str:
    """The text of a logfmt value as :func:`logfmt_value` wrote it (quotes and escapes undone)."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return _ESCAPE_SEQUENCE.sub(_unescape, value[1:-1])
    return value


def event_record(event: DeliveryEvent, now: float) -> dict:
    """The fields of a delivery log line, in their order."""
    return {
        "time": iso_utc(now),
        "queue_id": event.queue_id,
        "message_id": event.message_id,
        "from": event.sender,
        "recipients": [
            {"address": r.address, "status": r.status, "reply": r.reply} for r in event.recipients if r.tried
        ],
        "attempt": event.attempt,
        "delay": round(now - event.queued_at, 3),
        "state": event.state,
        "next_attempt": None if event.next_attempt is None else iso_utc(event.next_attempt),
        "reason": event.reason,
    }


def format_logfmt(record: dict) -> str:
    """``key=value`` pairs; each recipient as ``to=ADDRESS status=... reply="..."``."""
    parts = []
    for key, value in record.items():
        if key == "recipients":
            for recipient in value:
                parts += [
                    f"to={logfmt_value(recipient['address'])}",
                    f"status={recipient['status']}",
                    f"reply={logfmt_value(recipient['reply'] or '')}",
                ]
        elif key == "delay":
            parts.append(f"delay={value:.3f}s")
        elif value is not None:
            parts.append(f"{key}={logfmt_value(str(value))}")
    return " ".join(parts)


class DeliveryLog:
    """Appends delivery log lines to a file (``0640`` when created), reopened after log rotation."""

    def __init__(self, path: str, fmt: str = "logfmt") -> None:
        self.path = path
        self.fmt = fmt
        self._file = LogFileHandler(path, mode=0o640)

    def write(self, event: DeliveryEvent, now: float) -> None:
        """Write one line for ``event`` (raises ``OSError`` when it cannot)."""
        record = event_record(event, now)
        line = json.dumps(record, ensure_ascii=False) if self.fmt == "json" else format_logfmt(record)
        self._file.write_line(line)

    def reopen(self) -> None:
        """Close and reopen the file (the daemon's SIGHUP; rotation alone is noticed anyway)."""
        self._file.reopen()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def parse_line(line: str, log_format: str) -> dict | None:
    """One delivery log line as a record like :func:`event_record`'s; None if unreadable.

    logfmt values come back as strings (``attempt``, ``delay`` as written), with each
    ``to``/``status``/``reply`` group as one entry of ``recipients``.
    """
    if log_format == "json":
        try:
            record = json.loads(line)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
    record = {"recipients": []}
    for key, value in _LOGFMT_PAIR.findall(line):
        value = logfmt_unquote(value)
        if key == "to":
            record["recipients"].append({"address": value})
        elif key in ("status", "reply") and record["recipients"]:
            record["recipients"][-1][key] = value
        else:
            record[key] = value
    return record if "time" in record else None


def read_backwards(path: str, log_format: str, block: int = 65536) -> Iterator[dict]:
    """The records of a delivery log, newest first (read from its end: logs grow long).

    A log that cannot be opened gives nothing; lines that cannot be read are skipped.
    """
    try:
        handle = open(path, "rb")
    except OSError:
        return
    with handle:
        position = handle.seek(0, os.SEEK_END)
        rest = b""
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            lines = (handle.read(step) + rest).split(b"\n")
            rest = lines.pop(0) if position > 0 else b""
            for raw in reversed(lines):
                record = parse_line(raw.decode("utf-8", "replace"), log_format) if raw.strip() else None
                if record is not None:
                    yield record
