"""The metrics file: Prometheus text format, counters that add up across runs and stay exact.

Queue-independent: the counters. The gauges read from the queue are checked on both
queues by test_daemon.py's metrics test.
"""

import logging

from prometheus_client.parser import text_string_to_metric_families

from mq_transaction.metrics import Metrics
from mq_transaction.queue import MessageQueue
from mq_transaction.sender import RunResult


def samples(path):
    """{(sample name, sorted label pairs): value} as Prometheus's own parser reads the file."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def one_run(path, queue, **counts):
    """What one `mq-send` process does: a fresh Metrics, one run's counts, one write."""
    metrics = Metrics(str(path))
    metrics.add_run(RunResult(**counts))
    metrics.write(queue)


def test_counters_stay_exact_past_a_million_and_up_to_2_to_the_53(tmp_path):
    path, queue = tmp_path / "mq.prom", MessageQueue(tmp_path / "queue")
    one_run(path, queue, delivered=1_000_001)
    assert samples(path)[("mq_messages_delivered_total", ())] == 1_000_001
    one_run(path, queue, delivered=1)
    assert samples(path)[("mq_messages_delivered_total", ())] == 1_000_002
    one_run(path, queue, delivered=2**53 - 1 - 1_000_002)
    assert samples(path)[("mq_messages_delivered_total", ())] == 2**53 - 1
    one_run(path, queue, delivered=1)
    assert samples(path)[("mq_messages_delivered_total", ())] == 2**53


def test_labelled_counters_add_up_per_label_set_across_runs(tmp_path):
    path, queue = tmp_path / "mq.prom", MessageQueue(tmp_path / "queue")
    first = RunResult()
    first.outcomes["delivered", "2xx"] += 3
    first.outcomes["deferred", "4xx"] += 1
    second = RunResult()
    second.outcomes["delivered", "2xx"] += 2
    for result in (first, second):
        metrics = Metrics(str(path))
        metrics.add_run(result)
        metrics.write(queue)
    outcomes = {labels: v for (name, labels), v in samples(path).items() if name == "mq_recipient_outcomes_total"}
    assert outcomes == {
        (("class", "2xx"), ("outcome", "delivered")): 5,
        (("class", "4xx"), ("outcome", "deferred")): 1,
    }


def test_every_documented_metric_is_written_with_its_type_before_any_run(tmp_path):
    path = tmp_path / "mq.prom"
    Metrics(str(path)).write(MessageQueue(tmp_path / "queue"))
    types = {f.name: f.type for f in text_string_to_metric_families(path.read_text())}
    assert types == {
        "mq_messages": "gauge",
        "mq_oldest_message_age_seconds": "gauge",
        "mq_recipient_outcomes": "counter",
        "mq_messages_delivered": "counter",
        "mq_messages_deferred": "counter",
        "mq_messages_failed": "counter",
        "mq_messages_corrupt": "counter",
        "mq_smtp_connection_errors": "counter",
        "mq_last_success_timestamp_seconds": "gauge",
    }
    assert samples(path)[("mq_messages_delivered_total", ())] == 0
    assert samples(path)[("mq_last_success_timestamp_seconds", ())] == 0


def test_a_damaged_previous_file_is_replaced_with_a_warning(tmp_path, caplog):
    path, queue = tmp_path / "mq.prom", MessageQueue(tmp_path / "queue")
    path.write_text("mq_messages_delivered_total 7\nmq_messages_failed_total{oops 1\n")
    with caplog.at_level(logging.WARNING, logger="mq_transaction.metrics"):
        one_run(path, queue, delivered=1)
    assert "damaged" in caplog.text and str(path) in caplog.text
    assert samples(path)[("mq_messages_delivered_total", ())] == 8  # what was read before the damage is kept
