"""Prometheus text-format metrics for node_exporter's textfile collector, written atomically.

Counters survive from run to run: each write adds this process's new counts to the
values found in the previous file, so one-shot cron runs still give monotonic counters.
"""

from __future__ import annotations

import collections
import os
import re
import tempfile
import time

from .errors import ConfigurationError
from .interfaces import IMailQueue
from .queue import queued_time
from .states import STATES, WAITING

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")

COUNTERS = {
    "mq_recipient_outcomes_total": "Recipient outcomes by SMTP reply class (outcome: delivered, deferred, failed).",
    "mq_messages_delivered_total": "Messages fully delivered and removed from the queue.",
    "mq_messages_deferred_total": "Delivery attempts that left a message deferred.",
    "mq_messages_failed_total": "Messages moved to failed (rejected or expired).",
    "mq_messages_corrupt_total": "Queue files found corrupt and moved aside.",
    "mq_smtp_connection_errors_total": "Server-level failures: the SMTP server could not be used.",
}


class Metrics:
    """Counts what this process did; :meth:`write` publishes them with the queue's gauges."""

    def __init__(self, path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigurationError("mq.metrics_file", f"directory {directory} does not exist or is not writable")
        self.path = path
        self.pending: collections.Counter = collections.Counter()
        self.last_success: float | None = None

    def add_run(self, result, server_usable: bool = True) -> None:
        """Add one :class:`~mq_transaction.sender.RunResult`'s counts.

        A run without a server-level failure counts as a success unless the caller knows
        the server is down (the daemon skips the server while it backs off).
        """
        for (outcome, reply_class), count in result.outcomes.items():
            self.pending[("mq_recipient_outcomes_total", f'{{outcome="{outcome}",class="{reply_class}"}}')] += count
        self.pending[("mq_messages_delivered_total", "")] += result.delivered
        self.pending[("mq_messages_deferred_total", "")] += result.deferred
        self.pending[("mq_messages_failed_total", "")] += result.failed
        self.pending[("mq_messages_corrupt_total", "")] += result.corrupt
        self.pending[("mq_smtp_connection_errors_total", "")] += result.connection_errors
        if not result.server_error and server_usable:
            self.last_success = time.time()

    def _previous(self) -> tuple[collections.Counter, float | None]:
        counters: collections.Counter = collections.Counter()
        last_success = None
        try:
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    match = _SAMPLE.match(line.strip())
                    if not match:
                        continue
                    name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
                    if name in COUNTERS:
                        counters[(name, labels)] += int(value)
                    elif name == "mq_last_success_timestamp_seconds":
                        last_success = value
        except (OSError, ValueError):
            pass
        return counters, last_success

    def write(self, queue: IMailQueue, now: float | None = None) -> None:
        """Write the metrics file atomically (temporary file, fsync, rename)."""
        now = time.time() if now is None else now
        counters, last_success = self._previous()
        counters.update(self.pending)
        self.pending.clear()
        if self.last_success is not None:
            last_success = self.last_success
        counts = dict.fromkeys(STATES, 0)
        oldest = None
        for entry in queue.entries():
            counts[entry.state] += 1
            if entry.state in WAITING:
                age = now - queued_time(entry.queue_id)
                oldest = age if oldest is None else max(oldest, age)
        lines = [
            "# HELP mq_messages Messages in the queue by state.",
            "# TYPE mq_messages gauge",
            *(f'mq_messages{{state="{state}"}} {count}' for state, count in counts.items()),
            "# HELP mq_oldest_message_age_seconds Age of the oldest message still to be delivered.",
            "# TYPE mq_oldest_message_age_seconds gauge",
            f"mq_oldest_message_age_seconds {0 if oldest is None else round(oldest, 3)}",
        ]
        for name, help_text in COUNTERS.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            samples = sorted((labels, value) for (n, labels), value in counters.items() if n == name)
            lines += [f"{name}{labels} {value:g}" for labels, value in samples] or [f"{name} 0"]
        lines += [
            "# HELP mq_last_success_timestamp_seconds When a run last ended without a server-level failure.",
            "# TYPE mq_last_success_timestamp_seconds gauge",
            f"mq_last_success_timestamp_seconds {last_success or 0:.3f}",
        ]
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, scratch = tempfile.mkstemp(prefix=".mq-metrics-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(scratch, 0o644)
            os.replace(scratch, self.path)
        except BaseException:
            try:
                os.unlink(scratch)
            except FileNotFoundError:
                pass
            raise
