"""The deferred messages' retry times are read again only when ``deferred/`` changed.

With 100,000 deferred messages, a ``stat`` of each at every daemon wake-up costs most of a
second per commit; one ``stat`` of the directory tells whether anything moved.

Directory queue only: the database queue keeps the due time in an indexed column.
"""

from __future__ import annotations

import logging
import os
import time

import pytest

from mq_transaction import MessageQueue, queuefile, retry_times
from mq_transaction import queue as queue_module
from mq_transaction.queue import new_queue_id
from mq_transaction.queuefile import Envelope


def defer(queue: MessageQueue, retry_at: float) -> str:
    """Write a deferred message whose retry time is ``retry_at`` (as a sender leaves one)."""
    queue_id = new_queue_id()
    envelope = Envelope.new("app@example.com", ("ann@example.org",), time.time(), f"<{queue_id}@example.com>")
    scratch = os.path.join(queue.path, "tmp", queue_id)
    with open(scratch, "wb") as handle:
        handle.write(queuefile.encode(envelope, b"Subject: x\r\n\r\nx\r\n"))
    os.utime(scratch, (retry_at, retry_at))
    os.rename(scratch, os.path.join(queue.path, "deferred", queue_id))
    return queue_id


def age_the_directory(queue: MessageQueue) -> None:
    past = time.time() - 10
    os.utime(os.path.join(queue.path, "deferred"), (past, past))


def test_unchanged_deferred_directory_is_not_read_again(tmp_path, monkeypatch):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    due_now = defer(queue, time.time() - 1)
    later = defer(queue, time.time() + 3600)
    age_the_directory(queue)
    assert queue.due() == [due_now]
    assert queue.next_retry_time() < time.time()

    scanned = []
    real_scan = queue_module.scan

    def scan(dir_fd, *args, **kwargs):  # the queue lists the directories it holds open
        scanned.append(os.path.basename(os.readlink(f"/proc/self/fd/{dir_fd}")))
        return real_scan(dir_fd, *args, **kwargs)

    monkeypatch.setattr(queue_module, "scan", scan)  # new/ is listed by the queue
    monkeypatch.setattr(retry_times, "scan", scan)  # deferred/ would be listed by its retry times
    assert queue.due(flush=True) == sorted([due_now, later])
    assert queue.due() == [due_now]
    assert "new" in scanned and "deferred" not in scanned  # one stat of deferred/ only


def test_a_message_deferred_by_another_process_is_seen_at_once(tmp_path):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    first = defer(queue, time.time() - 1)
    age_the_directory(queue)
    assert queue.due() == [first]
    other = MessageQueue(tmp_path / "queue", fsync=False)
    second = defer(other, time.time() - 1)
    assert queue.due() == sorted([first, second])
    os.unlink(os.path.join(queue.path, "deferred", first))
    assert queue.due() == [second]


@pytest.mark.parametrize("changes", [2, 5])
def test_changes_within_one_clock_tick_are_not_missed(tmp_path, changes):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    seen = set()
    for _ in range(changes):  # faster than the file clock's tick: the stamp is too young to trust
        seen.add(defer(queue, time.time() - 1))
        assert set(queue.due()) == seen


def test_a_stray_file_is_never_due_and_is_reported_once(tmp_path, caplog):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    message = defer(queue, time.time() - 1)
    for directory, name in (("new", "README"), ("deferred", "20261399T101010123456Z-0123456789")):
        with open(os.path.join(queue.path, directory, name), "w") as handle:
            handle.write("not a message\n")
    with caplog.at_level(logging.WARNING, logger="mq_transaction.queue"):
        assert queue.due() == [message]
        assert queue.due() == [message]
    assert caplog.text.count("README is not a message") == 1
    assert caplog.text.count("20261399T101010123456Z-0123456789 is not a message") == 1
    assert sorted(os.listdir(os.path.join(queue.path, "corrupt"))) == []
