"""One QueuedMailer shared by many threads, each with its own transactions.

Every test runs on both queues (``queue_backend``): the directory queue (fsync off: the
threads, not the disk, are under test) and the database queue (own-connection mode).
"""

from __future__ import annotations

import threading

import pytest
import transaction
from queue_backends import QueueBackend, staged

from mq_transaction import QueuedMailer
from mq_transaction.states import MessageState

MESSAGE = b"From: app@example.com\r\nTo: bob@example.com\r\nSubject: threads\r\n\r\nHello from a thread.\r\n"
THREADS = 8
TRANSACTIONS = 250


def run_threads(work) -> list[BaseException]:
    """Run ``work(thread_number)`` in THREADS threads started together; return their errors."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def target(number: int) -> None:
        try:
            start.wait()
            work(number)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            transaction.abort()

    threads = [threading.Thread(target=target, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def open_queue(backend: QueueBackend):
    return backend.queue if backend.is_database else backend.open(fsync=False)


def published(queue) -> list[str]:
    return sorted(entry.queue_id for entry in queue.entries(MessageState.QUEUED))


@pytest.mark.slow
def test_eight_threads_of_250_transactions_publish_exactly_2000_messages_and_leave_none_staged(queue_backend):
    queue = open_queue(queue_backend)
    mailer = QueuedMailer(queue, default_sender="app@example.com")
    ids: list[str] = []

    def work(number: int) -> None:
        for _ in range(TRANSACTIONS):
            with transaction.manager:
                ids.append(mailer.send(MESSAGE))

    assert run_threads(work) == []
    assert len(published(queue)) == THREADS * TRANSACTIONS == 2000
    assert published(queue) == sorted(ids)
    assert staged(queue) == []


@pytest.mark.slow
def test_threads_that_abort_half_their_transactions_publish_exactly_the_other_half(queue_backend):
    queue = open_queue(queue_backend)
    mailer = QueuedMailer(queue, default_sender="app@example.com")
    committed: list[str] = []

    def work(number: int) -> None:
        for n in range(60):
            txn = transaction.begin()
            first = mailer.send(MESSAGE)
            second = mailer.send(MESSAGE)
            if (n + number) % 2:
                txn.abort()
            else:
                txn.commit()
                committed.extend((first, second))

    assert run_threads(work) == []
    assert published(queue) == sorted(committed)
    assert len(committed) == THREADS * 60
    assert staged(queue) == []


@pytest.mark.slow
def test_threads_each_with_an_explicit_manager_publish_every_committed_message(queue_backend):
    queue = open_queue(queue_backend)
    committed: list[str] = []

    def work(number: int) -> None:
        tm = transaction.TransactionManager(explicit=True)
        mailer = QueuedMailer(queue, transaction_manager=tm, default_sender="app@example.com")
        for _ in range(50):
            with tm:
                committed.append(mailer.send(MESSAGE))

    assert run_threads(work) == []
    assert published(queue) == sorted(committed)
    assert len(committed) == THREADS * 50
