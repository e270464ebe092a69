"""Prometheus text-format metrics for node_exporter's textfile collector, written atomically.

The file is produced by ``prometheus_client`` (metric families in a ``CollectorRegistry``,
rendered by ``generate_latest``) and read back by its parser. Counters survive from run to
run: each write adds this process's new counts to the values found in the previous file, so
one-shot cron runs still give monotonic counters. They are kept as integers and written
exactly up to 2**53 (a float's exact range; Prometheus stores floats).
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from .errors import ConfigurationError
from .interfaces import IMailQueue
from .queue_ids import queued_time
from .states import STATES, WAITING, MessageState

if TYPE_CHECKING:
    from .sender import RunResult

log = logging.getLogger("mq_transaction.metrics")

#: Counter name (as written, with ``_total``) -> help text, and the names of its labels.
COUNTERS = {
    "mq_recipient_outcomes_total": "Recipient outcomes by SMTP reply class (outcome: delivered, deferred, failed).",
    "mq_messages_delivered_total": "Messages fully delivered and removed from the queue.",
    "mq_messages_deferred_total": "Delivery attempts that left a message deferred.",
    "mq_messages_failed_total": "Messages moved to failed (rejected or expired).",
    "mq_messages_corrupt_total": "Queue files found corrupt and moved aside.",
    "mq_smtp_connection_errors_total": "Server-level failures: the SMTP server could not be used.",
}
COUNTER_LABELS: dict[str, tuple[str, ...]] = {"mq_recipient_outcomes_total": ("outcome", "class")}
LAST_SUCCESS = "mq_last_success_timestamp_seconds"

#: One counter sample: (metric name, label values in COUNTER_LABELS order).
SampleKey = tuple[str, tuple[str, ...]]


class Metrics:
    """Counts what this process did; :meth:`write` publishes them with the queue's gauges."""

    def __init__(self, path: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigurationError("mq.metrics_file", f"directory {directory} does not exist or is not writable")
        self.path = path
        self.pending: collections.Counter[SampleKey] = collections.Counter()
        self.last_success: float | None = None

    def add_run(self, result: RunResult, server_usable: bool = True) -> None:
        """Add one :class:`~mq_transaction.sender.RunResult`'s counts.

        A run without a server-level failure counts as a success unless the caller knows
        the server is down (the daemon skips the server while it backs off).
        """
        for (outcome, reply_class), count in result.outcomes.items():
            self.pending[("mq_recipient_outcomes_total", (outcome, reply_class))] += count
        self.pending[("mq_messages_delivered_total", ())] += result.delivered
        self.pending[("mq_messages_deferred_total", ())] += result.deferred
        self.pending[("mq_messages_failed_total", ())] += result.failed
        self.pending[("mq_messages_corrupt_total", ())] += result.corrupt
        self.pending[("mq_smtp_connection_errors_total", ())] += result.connection_errors
        if not result.server_error and server_usable:
            self.last_success = time.time()

    def _previous(self) -> tuple[collections.Counter[SampleKey], float | None]:
        """The counters and last success time of the file as it stands (none when it is absent)."""
        counters: collections.Counter[SampleKey] = collections.Counter()
        last_success = None
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return counters, None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read the previous metrics file %s (%s); counters start again from 0", self.path, exc)
            return counters, None
        try:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in COUNTERS:
                        labels = tuple(sample.labels.get(label, "") for label in COUNTER_LABELS.get(sample.name, ()))
                        counters[(sample.name, labels)] += int(sample.value)
                    elif sample.name == LAST_SUCCESS:
                        last_success = sample.value
        except (ValueError, OverflowError) as exc:  # a damaged file: keep what was read before the damage
            log.warning("the previous metrics file %s is damaged (%s); its counters may restart", self.path, exc)
        return counters, last_success

    def write(self, queue: IMailQueue, now: float | None = None) -> None:
        """Write the metrics file atomically (temporary file, fsync, rename)."""
        now = time.time() if now is None else now
        # The queue first: when it cannot be read (a database queue away), nothing is
        # written and this process's counts wait for the next write.
        counts = dict.fromkeys(STATES, 0)
        oldest = None
        for entry in queue.entries():
            counts[entry.state] += 1
            if entry.state in WAITING:
                age = now - queued_time(entry.queue_id)
                oldest = age if oldest is None else max(oldest, age)
        counters, last_success = self._previous()
        counters.update(self.pending)
        self.pending.clear()
        if self.last_success is not None:
            last_success = self.last_success
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(counts, oldest, counters, last_success))
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, scratch = tempfile.mkstemp(prefix=".mq-metrics-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(generate_latest(registry))
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


class _Snapshot:
    """A ``prometheus_client`` collector for one write: the values are fixed when it is made."""

    def __init__(
        self,
        counts: dict[MessageState, int],
        oldest: float | None,
        counters: collections.Counter[SampleKey],
        last_success: float | None,
    ) -> None:
        self.counts = counts
        self.oldest = oldest
        self.counters = counters
        self.last_success = last_success

    def collect(self) -> Iterator[Metric]:
        """The metric families, in the order of docs/operations.md's table."""
        states = GaugeMetricFamily("mq_messages", "Messages in the queue by state.", labels=["state"])
        for state, count in self.counts.items():
            states.add_metric([state], count)
        yield states
        yield GaugeMetricFamily(
            "mq_oldest_message_age_seconds",
            "Age of the oldest message still to be delivered.",
            value=0 if self.oldest is None else round(self.oldest, 3),
        )
        for name, help_text in COUNTERS.items():
            labels = COUNTER_LABELS.get(name, ())
            family = CounterMetricFamily(name, help_text, labels=list(labels))
            samples = sorted((values, count) for (n, values), count in self.counters.items() if n == name)
            for values, count in samples or ([] if labels else [((), 0)]):  # a labelled one starts with none
                family.add_metric(list(values), count)
            yield family
        yield GaugeMetricFamily(
            LAST_SUCCESS,
            "When a run last ended without a server-level failure.",
            value=round(self.last_success or 0, 3),
        )
