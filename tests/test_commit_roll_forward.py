"""A transaction's messages all become deliverable, even when its process dies mid-commit.

Several renames are not atomic together: the queue writes a commit record before them and
``cleanup()`` (every ``mq-send`` run, every minute in the daemon) finishes them.

Directory queue only: the database queue publishes a transaction's messages in one
``UPDATE``, which commits whole or not at all.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import transaction

from mq_transaction import MessageQueue, QueuedMailer, commit_records
from mq_transaction.commit_records import COMMIT_RECORD_PREFIX, INCOMPLETE_RECORD_MAX_AGE
from mq_transaction.errors import QueueWriteError

MESSAGE = b"From: app@example.com\r\nTo: ann@example.org\r\nSubject: %d\r\n\r\nHello\r\n"

#: Commits 3,000 messages in one transaction and stops (for the SIGKILL) after the 5th rename.
COMMITTER = """
import os, sys, time
import transaction
from mq_transaction import MessageQueue, QueuedMailer

queue_dir, marker = sys.argv[1], sys.argv[2]
mailer = QueuedMailer(MessageQueue(queue_dir, fsync=False))
real_rename, published = os.rename, []

def rename(source, target, **dir_fds):  # the queue renames by name between the directories it opened
    real_rename(source, target, **dir_fds)
    if os.path.basename(os.readlink("/proc/self/fd/%d" % dir_fds["dst_dir_fd"])) == "new":
        published.append(target)
        if len(published) == 5:
            open(marker, "w").close()
            time.sleep(120)

os.rename = rename
with transaction.manager:
    for number in range(3000):
        mailer.send(b"From: app@example.com\\r\\nTo: ann@example.org\\r\\nSubject: %d\\r\\n\\r\\nHi\\r\\n" % number)
"""


def names(directory) -> list[str]:
    return sorted(os.listdir(directory))


def messages(directory) -> list[str]:
    return [name for name in names(directory) if not name.startswith(".")]


@pytest.mark.slow
def test_a_committer_killed_among_the_renames_is_rolled_forward_by_cleanup(tmp_path):
    queue_dir, marker = tmp_path / "queue", tmp_path / "renaming"
    process = subprocess.Popen([sys.executable, "-c", COMMITTER, str(queue_dir), str(marker)])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, "the committing process ended early"
            assert time.monotonic() < deadline, "the commit never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert len(messages(queue_dir / "new")) == 5
    assert len(messages(queue_dir / "tmp")) == 2995  # committed, not yet published
    assert [n for n in names(queue_dir / "tmp") if n.startswith(COMMIT_RECORD_PREFIX)]

    MessageQueue(queue_dir).cleanup(max_age=36 * 3600)

    assert len(messages(queue_dir / "new")) == 3000
    assert names(queue_dir / "tmp") == []  # every message published, the record removed


def test_a_live_committers_record_is_left_alone(tmp_path, monkeypatch):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    real_rename = os.rename
    renaming, go_on = threading.Event(), threading.Event()

    def rename(source, target, **dir_fds):
        real_rename(source, target, **dir_fds)
        if threading.current_thread().name == "committer":
            renaming.set()
            go_on.wait(30)

    def commit():
        txn_manager = transaction.TransactionManager()
        mailer = QueuedMailer(queue, transaction_manager=txn_manager)
        with txn_manager:
            mailer.send(MESSAGE % 1)
            mailer.send(MESSAGE % 2)

    monkeypatch.setattr(os, "rename", rename)
    committer = threading.Thread(target=commit, name="committer")
    committer.start()
    try:
        assert renaming.wait(30)
        queue.cleanup(max_age=0)  # even with every tmp/ file "stale"
        assert len(messages(tmp_path / "queue" / "tmp")) == 1
        assert [n for n in names(tmp_path / "queue" / "tmp") if n.startswith(COMMIT_RECORD_PREFIX)]
    finally:
        go_on.set()
        committer.join(30)
    assert len(messages(tmp_path / "queue" / "new")) == 2
    assert names(tmp_path / "queue" / "tmp") == []


def test_a_single_message_is_published_without_a_commit_record(tmp_path, monkeypatch):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    records = []
    real = commit_records.write_commit_record
    monkeypatch.setattr(
        commit_records, "write_commit_record", lambda directory, ids: records.append(ids) or real(directory, ids)
    )
    mailer = QueuedMailer(queue)
    with transaction.manager:
        mailer.send(MESSAGE % 1)
    with transaction.manager:
        mailer.send(MESSAGE % 2)
        mailer.send(MESSAGE % 3)
    assert [len(ids) for ids in records] == [2]
    assert len(messages(tmp_path / "queue" / "new")) == 3


def test_when_the_record_cannot_be_written_the_messages_are_still_published(tmp_path, monkeypatch, caplog):
    queue = MessageQueue(tmp_path / "queue", fsync=False)

    def full_disk(directory, ids):
        raise QueueWriteError("cannot write .commit-x: No space left on device")

    monkeypatch.setattr(commit_records, "write_commit_record", full_disk)
    with caplog.at_level(logging.WARNING, logger="mq_transaction.queue"), transaction.manager:
        mailer = QueuedMailer(queue)
        mailer.send(MESSAGE % 1)
        mailer.send(MESSAGE % 2)
    assert len(messages(tmp_path / "queue" / "new")) == 2
    assert "cannot record the commit of 2 messages" in caplog.text


def test_an_incomplete_record_is_removed_once_old_and_publishes_nothing(tmp_path):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    tmp = tmp_path / "queue" / "tmp"
    queue_id = "20261130T101010123456Z-0123456789"
    (tmp / queue_id).write_bytes(b"not published")
    record = tmp / f"{COMMIT_RECORD_PREFIX}{queue_id}"
    record.write_text(f"{queue_id}\n")  # its process died before the end line: no commit recorded
    now = time.time()
    queue.cleanup(max_age=36 * 3600, now=now)
    assert record.exists()  # young: perhaps its committer is about to lock it
    queue.cleanup(max_age=36 * 3600, now=now + INCOMPLETE_RECORD_MAX_AGE + 1)
    assert not record.exists()
    assert messages(tmp_path / "queue" / "new") == []
    assert messages(tmp) == [queue_id]  # left for the ordinary tmp/ clean-up
