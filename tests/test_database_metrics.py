"""The metrics file of ``mq-send --metrics-file`` on a database queue: the same names, right values.

A real PostgreSQL server and a real SMTP server on 127.0.0.1; the values are read back with
Prometheus's own parser.
"""

from __future__ import annotations

import signal
import time

import pytest
import sqlalchemy as sa
import transaction
from daemon_processes import start_daemon
from prometheus_client.parser import text_string_to_metric_families

from mq_transaction import DatabaseQueue, QueuedMailer
from mq_transaction.cli_queue import main as mq_queue
from mq_transaction.cli_send import main as mq_send
from mq_transaction.errors import QueueUnavailableError
from mq_transaction.metrics import COUNTERS, LAST_SUCCESS, Metrics
from mq_transaction.sender import RunResult
from mq_transaction.states import STATES, MessageState

SENDER = "app@example.com"


def queue_one(queue: DatabaseQueue, to: str, subject: str) -> str:
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    with mailer.transaction_manager:
        return mailer.send(f"From: {SENDER}\nTo: {to}\nSubject: {subject}\n\nHi.\n".encode())


def samples(path) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label pairs): value}, as Prometheus's parser reads the file."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def gauges(found: dict) -> dict[str, float]:
    return {dict(labels)["state"]: value for (name, labels), value in found.items() if name == "mq_messages"}


def counter(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_a_run_writes_every_state_and_counter_of_the_database_queue(db_queue, postgres_url, smtp_sink, tmp_path):
    other = DatabaseQueue(postgres_url, host_name="other-host")  # another sender, holding one message
    try:
        queue_one(db_queue, "ann@example.org", "delivered")
        queue_one(db_queue, "bad@example.org", "rejected")
        queue_one(db_queue, "later@example.org", "deferred")
        held = queue_one(db_queue, "eve@example.org", "held")
        assert mq_queue(["--queue-url", postgres_url, "hold", held]) == 0
        in_flight = other.claim(queue_one(db_queue, "fay@example.org", "sending"))
        assert in_flight is not None
        broken = queue_one(db_queue, "cid@example.org", "corrupt")
        engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
        with engine.begin() as connection:
            connection.execute(
                sa.text("""update mq_messages set envelope = '{"sender": 1}' where queue_id = :id"""), {"id": broken}
            )
        engine.dispose()
        smtp_sink.handler.behaviour.rcpt_replies = {
            "bad@example.org": "550 5.1.1 no such user",
            "later@example.org": "451 4.3.0 try again later",
        }
        metrics_file = tmp_path / "mq.prom"
        args = ["--queue-url", postgres_url, "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_sink.port)]
        args += ["--metrics-file", str(metrics_file), "-q"]
        started = time.time()

        assert mq_send(args) == 1  # a refusal and a corrupt message: 1 wins over 75

        found = samples(metrics_file)
        assert gauges(found) == {
            MessageState.QUEUED: 0,
            MessageState.SENDING: 1,
            MessageState.DEFERRED: 1,
            MessageState.HELD: 1,
            MessageState.FAILED: 1,
            MessageState.CORRUPT: 1,
        }
        assert set(gauges(found)) == set(STATES)
        assert counter(found, "mq_messages_delivered_total") == 1
        assert counter(found, "mq_messages_deferred_total") == 1
        assert counter(found, "mq_messages_failed_total") == 1
        assert counter(found, "mq_messages_corrupt_total") == 1
        assert counter(found, "mq_smtp_connection_errors_total") == 0
        outcomes = {dict(k[1])["outcome"]: v for k, v in found.items() if k[0] == "mq_recipient_outcomes_total"}
        assert outcomes == {"delivered": 1, "deferred": 1, "failed": 1}
        assert {name for name, _ in found} >= set(COUNTERS) | {LAST_SUCCESS, "mq_oldest_message_age_seconds"}
        # The oldest waiting message (sending, deferred or held) was queued after `started` minus the setup.
        assert 0 < counter(found, "mq_oldest_message_age_seconds") < time.time() - started + 60
        assert started <= counter(found, LAST_SUCCESS) <= time.time()

        # A second run adds to the counters: the deferred recipient is now accepted.
        smtp_sink.handler.behaviour.rcpt_replies = {}
        assert mq_queue(["--queue-url", postgres_url, "retry", "--all-deferred"]) == 0
        assert mq_send(args) == 0
        found = samples(metrics_file)
        assert gauges(found)[MessageState.DEFERRED] == 0 and gauges(found)[MessageState.QUEUED] == 0
        assert counter(found, "mq_messages_delivered_total") == 2
        assert counter(found, "mq_messages_deferred_total") == 1
        assert counter(found, "mq_messages_failed_total") == 1
        assert counter(found, "mq_recipient_outcomes_total", outcome="delivered", **{"class": "2xx"}) == 2
        in_flight.release()
    finally:
        other.dispose()


def test_the_daemon_writes_its_metrics_for_the_database_queue(db_queue, postgres_url, smtp_sink, tmp_path):
    metrics_file = tmp_path / "mq.prom"
    daemon, lines = start_daemon(["--queue-url", postgres_url], smtp_sink.port, "--metrics-file", str(metrics_file))
    try:
        for number in range(3):
            queue_one(db_queue, "ann@example.org", f"message {number}")

        def delivered() -> bool:
            try:
                return counter(samples(metrics_file), "mq_messages_delivered_total") == 3
            except (FileNotFoundError, KeyError):
                return False

        deadline = time.monotonic() + 60
        while not delivered():
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        assert len(smtp_sink.received) == 3
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, "".join(lines)
    found = samples(metrics_file)  # written once more at exit
    assert set(gauges(found).values()) == {0}
    assert counter(found, "mq_messages_delivered_total") == 3


def test_counts_are_kept_for_the_next_write_when_the_database_cannot_be_read(db_queue, tmp_path):
    path = tmp_path / "mq.prom"
    metrics = Metrics(str(path))
    metrics.add_run(RunResult(delivered=2))
    away = DatabaseQueue("postgresql://mail:pw@127.0.0.1:1/app")  # nothing listens on port 1
    try:
        with pytest.raises(QueueUnavailableError):
            metrics.write(away)
    finally:
        away.dispose()
    assert not path.exists()
    metrics.write(db_queue)
    assert counter(samples(path), "mq_messages_delivered_total") == 2
