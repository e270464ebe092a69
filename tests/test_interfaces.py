"""Every queue implementation provides exactly the queue contract, checked by zope.interface."""

from __future__ import annotations

import os
import time

import pytest
from zope.interface.verify import verifyClass, verifyObject

from mq_transaction import MessageQueue
from mq_transaction.errors import DaemonAlreadyRunning
from mq_transaction.interfaces import IMailQueue, IMailWatcher
from mq_transaction.queuefile import Envelope


def test_the_directory_queue_provides_the_queue_interface(tmp_path):
    assert verifyClass(IMailQueue, MessageQueue)
    assert verifyObject(IMailQueue, MessageQueue(tmp_path / "queue"))


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_claim_many_claims_each_free_listed_message_in_order(tmp_path, kind):
    from mq_transaction.memory_queue import MemoryQueue

    queue = MessageQueue(tmp_path / "queue", fsync=False) if kind == "directory" else MemoryQueue()
    other = MessageQueue(tmp_path / "queue", fsync=False) if kind == "directory" else queue
    message = b"Subject: x\r\n\r\nx\r\n"
    envelope = Envelope.new("a@example.com", ["b@example.com"], time.time(), "<m@x>")
    ids = [queue.enqueue(envelope, message) for _ in range(4)]
    held = other.claim(ids[2])
    claims, problems = queue.claim_many([ids[3], ids[2], ids[0]])
    assert queue.claim_batch_size == 1  # a local claim: none held ahead
    assert [claim.queue_id for claim in claims] == [ids[3], ids[0]] and problems == []
    last = queue.claim(ids[1])
    assert queue.claim_many(ids) == ([], [])  # every one is held now
    for claim in (*claims, held, last):
        queue.unclaim(claim)

    queue = MessageQueue(tmp_path / "queue")
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
    watcher = queue.watch(wake_r, poll_interval=0.05)
    try:
        assert verifyObject(IMailWatcher, watcher)
        os.write(wake_w, b"x")
        assert watcher.wait(30.0) is False  # at once: the wake descriptor was written (a directory is never lost)
        with pytest.raises(BlockingIOError):
            os.read(wake_r, 1)
    finally:
        watcher.close()
        os.close(wake_r)
        os.close(wake_w)


def test_a_published_message_wakes_the_watcher_before_its_timeout(tmp_path):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
    watcher = queue.watch(wake_r, poll_interval=60.0)
    try:
        queue.enqueue(
            Envelope.new("a@example.com", ["b@example.com"], time.time(), "<m@x>"), b"Subject: x\r\n\r\nx\r\n"
        )
        started = time.monotonic()
        watcher.wait(30.0)
        assert time.monotonic() - started < 10.0
    finally:
        watcher.close()
        os.close(wake_r)
        os.close(wake_w)


def test_a_second_daemon_lock_on_one_directory_queue_is_refused(tmp_path):
    first = MessageQueue(tmp_path / "queue")
    first.daemon_lock()
    first.daemon_lock()  # the holder may ask again
    with pytest.raises(DaemonAlreadyRunning, match="already running"):
        MessageQueue(tmp_path / "queue").daemon_lock()


def test_the_data_manager_and_its_savepoint_provide_what_transaction_expects(tmp_path):
    import transaction as txn_module
    from transaction.interfaces import IDataManagerSavepoint, ISavepointDataManager

    from mq_transaction.datamanager import MailDataManager

    manager = MailDataManager(MessageQueue(tmp_path / "queue"), txn_module.TransactionManager())
    assert verifyObject(ISavepointDataManager, manager)
    assert verifyObject(IDataManagerSavepoint, manager.savepoint())
