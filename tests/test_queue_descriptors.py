"""The directory queue's open descriptors: opened once, closed with the queue, none per
message or per request, and usable by a forked child beside its parent."""

from __future__ import annotations

import gc
import os

import pytest
import transaction

from mq_transaction import MessageQueue, QueuedMailer
from mq_transaction.errors import QueueUnavailableError
from mq_transaction.queue import new_queue_id

MESSAGE = b"From: app@example.com\nTo: bob@example.org\nSubject: hi\n\nHello\n"


def open_descriptors() -> int:
    gc.collect()  # queues other tests dropped in reference cycles close now, not in the middle of a count
    return len(os.listdir("/proc/self/fd"))


def test_a_queue_holds_its_directories_open_until_it_is_closed(tmp_path):
    before = open_descriptors()
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    assert open_descriptors() == before + 8  # the root, tmp/ and one per state
    queue.daemon_lock()
    assert open_descriptors() == before + 9
    queue.close()
    queue.close()
    assert open_descriptors() == before
    with pytest.raises(QueueUnavailableError, match=f"the queue at {tmp_path / 'queue'} was closed"):
        queue.due()


def test_a_queue_used_as_a_context_manager_is_closed_after_it(tmp_path):
    before = open_descriptors()
    with MessageQueue(tmp_path / "queue", fsync=False) as queue:
        QueuedMailer(queue).enqueue(MESSAGE)
    assert open_descriptors() == before
    assert len(os.listdir(tmp_path / "queue" / "new")) == 1


def test_queues_dropped_without_close_leave_no_descriptor_open(tmp_path):
    before = open_descriptors()
    for _ in range(300):  # a mailer made per request from a path, as some apps do
        QueuedMailer(str(tmp_path / "queue")).enqueue(MESSAGE)
    assert open_descriptors() == before
    assert len(os.listdir(tmp_path / "queue" / "new")) == 300


def test_sending_and_delivering_open_no_descriptor_per_message(tmp_path):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    before = open_descriptors()
    for _ in range(100):
        with mailer.transaction_manager:
            mailer.send(MESSAGE)
            mailer.send(MESSAGE)  # two: the commit goes through a commit record
    for queue_id in queue.due():
        claim = queue.claim(queue_id)
        queue.finish_delivered(claim)
    queue.cleanup(max_age=3600)
    assert open_descriptors() == before
    assert queue.due() == []


def test_a_forked_child_and_its_parent_list_the_queue_at_the_same_time(tmp_path):
    """After a fork both processes hold the same open directories. A directory's read
    position is shared by every copy of its descriptor, so each listing must read through
    one of its own, or the two would skip parts of each other's listing."""
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    count = 3000  # far more than one getdents() buffer of names
    for _ in range(count):
        (tmp_path / "queue" / "new" / new_queue_id()).touch()
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if every listing was whole
        try:
            os._exit(0 if all(len(queue.due()) == count for _ in range(40)) else 1)
        except BaseException:
            os._exit(2)
    sizes = [len(queue.due()) for _ in range(40)]
    _, status = os.waitpid(pid, 0)
    assert sizes == [count] * 40
    assert os.waitstatus_to_exitcode(status) == 0
