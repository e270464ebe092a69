"""Moving a queue directory's mail into a database queue: ids, states, envelopes and bytes kept."""

from __future__ import annotations

import time

import pytest
import transaction

from mq_transaction import DatabaseQueue, MessageQueue, QueuedMailer
from mq_transaction.database_import import move_queue
from mq_transaction.states import MessageState, RecipientStatus


@pytest.fixture
def db_queue(postgres_url):
    queue = DatabaseQueue(postgres_url)
    queue.init_db()
    yield queue
    queue.dispose()


def queue_one(queue: MessageQueue, number: int) -> str:
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    with mailer.transaction_manager:
        return mailer.send(f"From: app@example.com\r\nTo: ann@example.org\r\nSubject: m{number}\r\n\r\nHi\xe9.\r\n")


def test_every_waiting_message_moves_with_its_id_state_envelope_and_bytes(tmp_path, db_queue):
    directory = MessageQueue(tmp_path / "queue")
    queued, deferred, held, failed, sending = (queue_one(directory, n) for n in range(5))
    next_attempt = time.time() + 3600
    claim = directory.claim(deferred)
    claim.envelope.recipients[0].status = RecipientStatus.DEFERRED
    directory.finish_deferred(claim, next_attempt)
    claim = directory.claim(failed)
    claim.envelope.recipients[0].status = RecipientStatus.FAILED
    claim.envelope.failure_reason = "rejected"
    directory.finish_failed(claim)
    directory.move(directory.lock(directory.find(held)), MessageState.QUEUED, MessageState.HELD)
    in_flight = directory.claim(sending)  # a sender still holds this one
    before = {entry.queue_id: directory.read(entry) for entry in directory.entries()}

    report = move_queue(directory, db_queue)

    assert sorted(report.moved) == sorted([queued, deferred, held, failed])
    assert report.left == []
    states = {entry.queue_id: entry.state for entry in db_queue.entries()}
    assert states == {
        queued: MessageState.QUEUED,
        deferred: MessageState.DEFERRED,
        held: MessageState.HELD,
        failed: MessageState.FAILED,
    }
    for queue_id in report.moved:
        envelope, message = db_queue.read(db_queue.find(queue_id))
        old_envelope, old_message = before[queue_id]
        assert message == old_message
        assert envelope.to_json() == old_envelope.to_json()
    assert db_queue.find(deferred).next_attempt == pytest.approx(next_attempt, abs=0.01)
    assert db_queue.due() == [queued]
    assert [entry.queue_id for entry in directory.entries()] == [sending]
    in_flight.release()


def test_moving_again_after_a_crash_makes_no_second_copy(tmp_path, db_queue):
    directory = MessageQueue(tmp_path / "queue")
    queue_id = queue_one(directory, 1)
    entry = directory.find(queue_id)
    envelope, message = directory.read(entry)
    db_queue.insert_existing(queue_id, MessageState.QUEUED, envelope, message)  # inserted, then "crashed"
    report = move_queue(directory, db_queue)
    assert report.moved == [queue_id]
    assert [entry.queue_id for entry in db_queue.entries()] == [queue_id]
    assert list(directory.entries()) == []
