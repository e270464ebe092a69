"""One QueuedMailer shared by many threads, each with its own transactions."""

from __future__ import annotations

import os
import threading

import pytest
import transaction

from mq_transaction import MessageQueue, QueuedMailer

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


@pytest.mark.slow
def test_eight_threads_of_250_transactions_give_exactly_2000_files_in_new_and_none_in_tmp(tmp_path):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    mailer = QueuedMailer(queue, default_sender="app@example.com")
    ids: list[str] = []

    def work(number: int) -> None:
        for _ in range(TRANSACTIONS):
            with transaction.manager:
                ids.append(mailer.send(MESSAGE))

    assert run_threads(work) == []
    published = os.listdir(os.path.join(queue.path, "new"))
    assert len(published) == THREADS * TRANSACTIONS == 2000
    assert sorted(published) == sorted(ids)
    assert os.listdir(os.path.join(queue.path, "tmp")) == []


@pytest.mark.slow
def test_threads_that_abort_half_their_transactions_publish_exactly_the_other_half(tmp_path):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
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
    assert sorted(os.listdir(os.path.join(queue.path, "new"))) == sorted(committed)
    assert len(committed) == THREADS * 60
    assert os.listdir(os.path.join(queue.path, "tmp")) == []


@pytest.mark.slow
def test_threads_each_with_an_explicit_manager_publish_every_committed_message(tmp_path):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    committed: list[str] = []

    def work(number: int) -> None:
        tm = transaction.TransactionManager(explicit=True)
        mailer = QueuedMailer(queue, transaction_manager=tm, default_sender="app@example.com")
        for _ in range(50):
            with tm:
                committed.append(mailer.send(MESSAGE))

    assert run_threads(work) == []
    assert sorted(os.listdir(os.path.join(queue.path, "new"))) == sorted(committed)
    assert len(committed) == THREADS * 50
