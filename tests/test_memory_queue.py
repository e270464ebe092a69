"""``MemoryQueue``: the queue contract in memory, under the real data manager and the real sender."""

from __future__ import annotations

import os

import pytest
import transaction
from zope.interface.verify import verifyObject

from mq_transaction import QueuedMailer
from mq_transaction.interfaces import IMailQueue, IMailWatcher, ISessionMailQueue
from mq_transaction.memory_queue import MemoryQueue
from mq_transaction.sender import Sender
from mq_transaction.settings import parse_settings
from mq_transaction.states import MessageState

MESSAGE = b"From: app@example.com\nTo: ann@example.org\nSubject: hi\n\nHello\n"


def test_the_memory_queue_and_its_watcher_provide_the_interfaces():
    queue = MemoryQueue()
    assert verifyObject(IMailQueue, queue)
    assert not ISessionMailQueue.providedBy(queue)  # no same-transaction mode: QueuedMailer(session=) refuses it
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
    try:
        watcher = queue.watch(wake_r, poll_interval=0.01)
        assert verifyObject(IMailWatcher, watcher)
        os.write(wake_w, b"x")
        assert watcher.wait(30.0) is False  # woken; memory is never lost and found again
        with pytest.raises(BlockingIOError):
            os.read(wake_r, 1)  # drained by the wait
    finally:
        os.close(wake_r)
        os.close(wake_w)


def test_committed_mail_is_due_and_aborted_or_rolled_back_mail_is_not():
    published = []
    queue = MemoryQueue(on_publish=lambda queue_id, envelope, message: published.append(queue_id))
    manager = transaction.TransactionManager(explicit=True)
    mailer = QueuedMailer(queue, transaction_manager=manager)
    with manager as txn:
        kept = mailer.send(MESSAGE)
        savepoint = txn.savepoint()
        mailer.send(MESSAGE)
        savepoint.rollback()
        assert list(queue.staged) == [kept] and queue.due() == []
    manager.begin()
    mailer.send(MESSAGE)
    manager.abort()
    assert queue.due() == [kept] == published
    assert queue.staged == {}


def test_the_real_sender_drains_a_memory_queue(smtp_sink, tmp_path):
    queue = MemoryQueue()
    ids = [queue.enqueue(*_prepared(n)) for n in range(3)]
    settings = parse_settings(
        {"mq.queue_dir": str(tmp_path / "unused"), "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(smtp_sink.port)}
    )
    result = Sender(settings, queue=queue).run()
    assert result.delivered == 3 and int(result.exit_status) == 0
    assert len(smtp_sink.received) == 3
    assert list(queue.entries()) == [] and ids == sorted(ids)


def test_an_operator_lock_keeps_a_sender_away_and_move_changes_the_state():
    queue = MemoryQueue()
    queue_id = queue.enqueue(*_prepared(0))
    claim = queue.lock(queue.find(queue_id))
    assert claim is not None and queue.claim(queue_id) is None and queue.lock(queue.find(queue_id)) is None
    queue.move(claim, MessageState.QUEUED, MessageState.HELD)
    assert queue.find(queue_id).state == MessageState.HELD and queue.due() == []


def _prepared(number: int):
    from mq_transaction.prepare import prepare_message
    from mq_transaction.queuefile import Envelope

    prepared = prepare_message(MESSAGE.replace(b"hi", f"hi {number}".encode()), None, None, None)
    return Envelope.new(prepared.sender, prepared.recipients, 1_800_000_000.0 + number, prepared.message_id), (
        prepared.message
    )
