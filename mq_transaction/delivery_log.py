"""The delivery log: one line per message and attempt, logfmt (default) or JSON lines."""

from __future__ import annotations

import json
import os
import threading

from .durations import iso_utc
from .hooks import DeliveryEvent


def _logfmt_value(value: object) -> str:
    text = "" if value is None else str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


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
                    f"to={_logfmt_value(recipient['address'])}",
                    f"status={recipient['status']}",
                    f"reply={_logfmt_value(recipient['reply'])}",
                ]
        elif key == "delay":
            parts.append(f"delay={value:.3f}s")
        elif value is not None:
            parts.append(f"{key}={_logfmt_value(value)}")
    return " ".join(parts)


class DeliveryLog:
    """Appends delivery log lines to a file; :meth:`reopen` after log rotation (SIGHUP)."""

    def __init__(self, path: str, fmt: str = "logfmt") -> None:
        self.path = path
        self.fmt = fmt
        self._lock = threading.Lock()
        self._handle = self._open()

    def _open(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def write(self, event: DeliveryEvent, now: float) -> None:
        """Write one line for ``event``."""
        record = event_record(event, now)
        line = json.dumps(record, ensure_ascii=False) if self.fmt == "json" else format_logfmt(record)
        with self._lock:
            self._handle.write(line + "\n")

    def reopen(self) -> None:
        """Close and reopen the file (for logrotate)."""
        with self._lock:
            self._handle.close()
            self._handle = self._open()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._handle.close()
