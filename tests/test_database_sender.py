"""Senders on several hosts sharing one database queue: a real PostgreSQL server, a real SMTP server on 127.0.0.1.

The sender is the directory queue's sender; only the queue differs. What every queue must
do is tested on both queues by the tests that take ``queue_backend`` (tests/test_sender.py
and the others); what is here is what only a database queue does (senders on several hosts).
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
import transaction

from mq_transaction import DatabaseQueue, QueuedMailer
from mq_transaction.sender import RunResult, Sender
from mq_transaction.settings import parse_settings

SENDER = "app@example.com"


def make_settings(url: str, port: int, **extra: object):
    raw = {"mq.queue_url": url, "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(port)}
    raw.update({f"mq.{key}": str(value) for key, value in extra.items()})
    return parse_settings(raw)


def queue_messages(queue, count: int = 1, to: tuple[str, ...] = ("ann@example.org",)) -> list[str]:
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    ids = []
    for number in range(count):
        with mailer.transaction_manager:
            ids.append(mailer.send(f"From: {SENDER}\nTo: {', '.join(to)}\nSubject: message {number}\n\nHi.\n".encode()))
    return ids


def table_states(url: str) -> dict[str, int]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("select state, count(*) from mq_messages group by state")).all()
    engine.dispose()
    return {state: count for state, count in rows}


def test_two_senders_on_two_hosts_deliver_each_message_once(db_queue, postgres_url, smtp_sink):
    queue_messages(db_queue, 60)
    results = []

    def sender(host: str) -> None:
        queue = DatabaseQueue(postgres_url, host_name=host)
        results.append(Sender(make_settings(postgres_url, smtp_sink.port), queue=queue).run())
        queue.dispose()

    threads = [threading.Thread(target=sender, args=(host,)) for host in ("web1", "web2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result.delivered for result in results) == 60
    subjects = [r.content.split(b"Subject: ")[1].split(b"\r\n")[0] for r in smtp_sink.received]
    assert len(subjects) == len(set(subjects)) == 60
    assert table_states(postgres_url) == {}


def leases(url: str) -> list[tuple[str, str | None]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("select state, lease_owner from mq_messages order by queue_id")).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_messages_claimed_ahead_go_back_to_the_queue_at_once_when_the_server_fails(db_queue, postgres_url, smtp_sink):
    queue_messages(db_queue, 6)
    sender = Sender(make_settings(postgres_url, smtp_sink.port, smtp_connections=1, smtp_timeout="2s"))
    # The server goes away once two messages are in: the run stops with four claimed ahead.
    sender.hooks.add("delivered", lambda event: smtp_sink.stop() if len(smtp_sink.received) == 2 else None)
    try:
        result = sender.run()
    finally:
        sender.queue.dispose()
    assert db_queue.claim_batch_size >= 6  # all six were claimed in one step
    assert result.delivered == 2 and result.exit_status == 75
    assert leases(postgres_url) == [("queued", None)] * 4  # no lease left to run out


def test_a_run_told_to_stop_gives_back_what_it_claimed_ahead(db_queue, postgres_url, smtp_sink):
    queue_messages(db_queue, 5)
    sender = Sender(make_settings(postgres_url, smtp_sink.port, smtp_connections=1))
    result = RunResult()
    try:
        sender.deliver(sender.queue.due(), result, should_stop=lambda: result.delivered >= 2)
    finally:
        sender.close()
        sender.queue.dispose()
    assert result.delivered == 2 and len(smtp_sink.received) == 2
    assert leases(postgres_url) == [("queued", None)] * 3


def test_max_messages_claims_no_more_than_it_may_send(db_queue, postgres_url, smtp_sink):
    queue_messages(db_queue, 5)
    sender = Sender(make_settings(postgres_url, smtp_sink.port))
    try:
        result = sender.run(max_messages=2)
    finally:
        sender.queue.dispose()
    assert result.delivered == 2
    assert leases(postgres_url) == [("queued", None)] * 3
