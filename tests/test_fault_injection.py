"""Full disks and I/O errors injected into ``os`` calls in each phase of queueing.

While a message is sent, a failure raises ``QueueWriteError`` and leaves nothing in
``tmp/`` or ``new/``. In ``tpc_finish`` (the transaction is already decided) a failure
never raises: it is logged at CRITICAL with the file names, for recovery.

Directory queue only: the faults are the file system's (write, fsync, rename); the
database queue's own failure, a lost connection, is tested in test_database_outages.py.
"""

from __future__ import annotations

import errno
import logging
import os

import pytest
import transaction

from mq_transaction import MailQueueError, QueueWriteError
from mq_transaction.queuefile import decode

MESSAGE = (
    b"From: app@example.com\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: faults\r\n"
    b"Message-ID: <faults@example.com>\r\n"
    b"Date: Sat, 28 Nov 2026 15:11:36 +0000\r\n"
    b"\r\n" + b"body line\r\n" * 200
)

ERRNOS = [pytest.param(errno.ENOSPC, id="ENOSPC"), pytest.param(errno.EIO, id="EIO")]


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Fault:
    """Replace ``os.<name>`` so that it fails with ``error`` for paths under ``where``.

    Only calls touching the queue's own files or directories fail, so pytest and the
    rest of the process keep working. ``calls`` counts the failed calls.
    """

    def __init__(self, monkeypatch, name: str, error: int, where: str) -> None:
        self.original = getattr(os, name)
        self.error = error
        self.where = where
        self.calls = 0
        monkeypatch.setattr(os, name, getattr(self, f"_{name}"))

    def _hit(self, path: str) -> bool:
        return os.fspath(path).startswith(self.where)

    def _raise(self) -> None:
        self.calls += 1
        raise OSError(self.error, os.strerror(self.error))

    def _write(self, fd, data):
        if self._hit(fd_path(fd)):
            self._raise()
        return self.original(fd, data)

    def _fsync(self, fd):
        if self._hit(fd_path(fd)):
            self._raise()
        return self.original(fd)

    def _rename(self, source, target, **kwargs):
        if self._hit(at(source, kwargs.get("src_dir_fd"))):
            self._raise()
        return self.original(source, target, **kwargs)

    def _open(self, path, flags, mode=0o777, **kwargs):
        if self._hit(at(path, kwargs.get("dir_fd"))) and flags & os.O_CREAT:
            self._raise()
        return self.original(path, flags, mode, **kwargs)


def at(name, dir_fd) -> str:
    """The path a call names: ``name`` alone, or relative to the open directory ``dir_fd``
    (the queue works by name inside the directories it opened)."""
    return os.fspath(name) if dir_fd is None else os.path.join(fd_path(dir_fd), name)


def tmp_dir(queue) -> str:
    return os.path.join(queue.path, "tmp")


def new_dir(queue) -> str:
    return os.path.join(queue.path, "new")


# -- while sending: the request fails, nothing is left behind ----------------------


@pytest.mark.parametrize("error", ERRNOS)
@pytest.mark.parametrize("call", ["open", "write", "fsync"])
def test_failure_while_writing_raises_queue_write_error_and_leaves_nothing(
    queued_mailer, mail_queue, queue_files, monkeypatch, call, error
):
    fault = Fault(monkeypatch, call, error, tmp_dir(mail_queue))
    with pytest.raises(QueueWriteError) as caught:
        with transaction.manager:
            queued_mailer.send(MESSAGE)
    assert fault.calls == 1
    assert isinstance(caught.value, MailQueueError) and isinstance(caught.value, OSError)
    assert caught.value.__cause__.errno == error
    assert tmp_dir(mail_queue) in str(caught.value)
    assert queue_files("tmp") == []
    assert queue_files("new") == []


@pytest.mark.parametrize("error", ERRNOS)
def test_failed_fsync_is_reported_not_retried(queued_mailer, mail_queue, queue_files, monkeypatch, error):
    fault = Fault(monkeypatch, "fsync", error, tmp_dir(mail_queue))
    transaction.begin()
    with pytest.raises(QueueWriteError):
        queued_mailer.send(MESSAGE)
    assert fault.calls == 1
    # The caller may catch the error and go on: the commit is vetoed, nothing reappears.
    with pytest.raises(QueueWriteError, match="vetoed"):
        transaction.commit()
    transaction.abort()
    assert queue_files("tmp") == []
    assert queue_files("new") == []


def test_a_failure_on_the_second_message_keeps_the_first_until_the_transaction_ends(
    queued_mailer, mail_queue, queue_files, monkeypatch
):
    with pytest.raises(QueueWriteError):
        with transaction.manager:
            first = queued_mailer.send(MESSAGE)
            Fault(monkeypatch, "write", errno.ENOSPC, tmp_dir(mail_queue))
            assert queue_files("tmp") == [first]
            queued_mailer.send(MESSAGE)
    assert queue_files("tmp") == []
    assert queue_files("new") == []


def test_short_writes_are_continued_until_every_byte_is_written(queued_mailer, mail_queue, monkeypatch):
    original = os.write
    where = tmp_dir(mail_queue)
    calls = []

    def dribble(fd, data):
        if fd_path(fd).startswith(where):
            calls.append(len(data))
            return original(fd, bytes(data[:1000]))
        return original(fd, data)

    monkeypatch.setattr(os, "write", dribble)
    with transaction.manager:
        queue_id = queued_mailer.send(MESSAGE)
    monkeypatch.undo()
    assert len(calls) > 2
    with open(os.path.join(new_dir(mail_queue), queue_id), "rb") as handle:
        assert decode(handle.read())[1] == MESSAGE


def test_a_write_that_writes_nothing_is_an_error_not_a_loop(queued_mailer, mail_queue, queue_files, monkeypatch):
    original = os.write
    where = tmp_dir(mail_queue)
    monkeypatch.setattr(os, "write", lambda fd, data: 0 if fd_path(fd).startswith(where) else original(fd, data))
    with pytest.raises(QueueWriteError):
        with transaction.manager:
            queued_mailer.send(MESSAGE)
    assert queue_files("tmp") == []


# -- in tpc_finish: never raises, logged at CRITICAL, nothing lost --------------------


@pytest.mark.parametrize("error", ERRNOS)
def test_rename_failure_in_tpc_finish_is_logged_critical_and_the_file_stays_in_tmp(
    queued_mailer, mail_queue, queue_files, monkeypatch, caplog, error
):
    fault = Fault(monkeypatch, "rename", error, tmp_dir(mail_queue))
    with transaction.manager:
        queue_id = queued_mailer.send(MESSAGE)
    # The commit did not raise; the after-commit abort did not remove the file either.
    assert fault.calls == 1
    assert queue_files("tmp") == [queue_id]
    assert queue_files("new") == []
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    text = critical[0].getMessage()
    assert queue_id in text
    assert os.path.join(tmp_dir(mail_queue), queue_id) in text
    assert new_dir(mail_queue) in text


def test_rename_failure_of_one_message_still_publishes_the_others(
    queued_mailer, mail_queue, queue_files, monkeypatch, caplog
):
    with transaction.manager:
        ids = [queued_mailer.send(MESSAGE) for _ in range(3)]
        Fault(monkeypatch, "rename", errno.EIO, os.path.join(tmp_dir(mail_queue), ids[1]))
    assert queue_files("new") == sorted([ids[0], ids[2]])
    assert [name for name in queue_files("tmp") if not name.startswith(".")] == [ids[1]]
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and ids[1] in critical[0]
    assert "the next mq-send run retries the rename" in critical[0]
    monkeypatch.undo()
    mail_queue.cleanup(max_age=36 * 3600)  # the commit record is rolled forward
    assert queue_files("new") == sorted(ids)
    assert queue_files("tmp") == []


@pytest.mark.parametrize("error", ERRNOS)
def test_directory_fsync_failure_in_tpc_finish_is_logged_critical_and_does_not_raise(
    queued_mailer, mail_queue, queue_files, monkeypatch, caplog, error
):
    fault = Fault(monkeypatch, "fsync", error, new_dir(mail_queue))
    with transaction.manager:
        queue_id = queued_mailer.send(MESSAGE)
    assert fault.calls == 1
    # The rename happened: the message is deliverable, but may not survive a crash.
    assert queue_files("new") == [queue_id]
    assert queue_files("tmp") == []
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    assert queue_id in critical[0]
    assert os.path.join(new_dir(mail_queue), queue_id) in critical[0]
    assert "fsync" in critical[0]


# -- enqueue(): no transaction, so every failure raises ------------------------------


@pytest.mark.parametrize("error", ERRNOS)
@pytest.mark.parametrize("call", ["write", "fsync", "rename"])
def test_enqueue_failure_raises_and_leaves_nothing_in_tmp_or_new(
    queued_mailer, mail_queue, queue_files, monkeypatch, call, error
):
    Fault(monkeypatch, call, error, tmp_dir(mail_queue))
    with pytest.raises(QueueWriteError):
        queued_mailer.enqueue(MESSAGE)
    assert queue_files("tmp") == []
    assert queue_files("new") == []


def test_enqueue_directory_fsync_failure_raises(queued_mailer, mail_queue, monkeypatch):
    Fault(monkeypatch, "fsync", errno.EIO, new_dir(mail_queue))
    with pytest.raises(QueueWriteError, match="publish"):
        queued_mailer.enqueue(MESSAGE)


def test_fsync_off_never_calls_fsync(tmp_path, monkeypatch):
    from mq_transaction import MessageQueue, QueuedMailer

    queue = MessageQueue(tmp_path / "fast", fsync=False)
    fault = Fault(monkeypatch, "fsync", errno.EIO, queue.path)
    mailer = QueuedMailer(queue, default_sender="app@example.com")
    transaction.abort()
    with transaction.manager:
        queue_id = mailer.send(MESSAGE)
    assert fault.calls == 0
    assert os.listdir(new_dir(queue)) == [queue_id]


def test_a_caught_write_error_still_vetoes_the_transaction(tmp_path, monkeypatch):
    """A view that catches the QueueWriteError cannot commit the request without its mail."""
    import errno

    import transaction as txn_module

    from mq_transaction import MessageQueue, QueuedMailer, QueueWriteError

    queue = MessageQueue(tmp_path / "q")
    manager = txn_module.TransactionManager(explicit=True)
    mailer = QueuedMailer(queue, transaction_manager=manager)
    manager.begin()
    mailer.send(b"From: a@example.com\nTo: b@example.org\n\nfirst\n")
    real_write = os.write

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(QueueWriteError):
        mailer.send(b"From: a@example.com\nTo: b@example.org\n\nsecond\n")
    monkeypatch.setattr(os, "write", real_write)
    with pytest.raises(QueueWriteError, match="vetoed"):
        manager.commit()
    manager.abort()
    assert list(queue.entries()) == []
    assert os.listdir(os.path.join(queue.path, "tmp")) == []


def test_enqueue_withdraws_a_message_whose_publication_was_not_durable(tmp_path, monkeypatch):
    import errno

    from mq_transaction import MessageQueue, QueuedMailer, QueueWriteError

    queue = MessageQueue(tmp_path / "q")
    mailer = QueuedMailer(queue)
    real_fsync = os.fsync
    calls = []

    def fail_directory_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the first fsync is the file's, the second is new/'s
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fail_directory_fsync)
    with pytest.raises(QueueWriteError):
        mailer.enqueue(b"From: a@example.com\nTo: b@example.org\n\nx\n")
    assert list(queue.entries()) == []


def test_rollback_to_a_savepoint_before_a_failed_send_clears_the_veto(tmp_path, monkeypatch):
    """Issue 10 item 16: the savepoint restores the write error it saw (none), so the
    transaction commits the mail sent before it, without the failed one."""
    import errno

    import transaction as txn_module

    from mq_transaction import MessageQueue, QueuedMailer, QueueWriteError

    queue = MessageQueue(tmp_path / "q")
    manager = txn_module.TransactionManager(explicit=True)
    mailer = QueuedMailer(queue, transaction_manager=manager)
    txn = manager.begin()
    kept = mailer.send(b"From: a@example.com\nTo: b@example.org\n\nfirst\n")
    savepoint = txn.savepoint()
    real_write = os.write

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(QueueWriteError):
        mailer.send(b"From: a@example.com\nTo: b@example.org\n\nsecond\n")
    monkeypatch.setattr(os, "write", real_write)
    savepoint.rollback()
    manager.commit()
    assert [entry.queue_id for entry in queue.entries()] == [kept]
    assert os.listdir(os.path.join(queue.path, "tmp")) == []


def test_a_failed_send_after_the_savepoint_it_rolls_back_past_still_vetoes(tmp_path, monkeypatch):
    """A savepoint taken after the failed write keeps the veto when rolled back to."""
    import errno

    import transaction as txn_module

    from mq_transaction import MessageQueue, QueuedMailer, QueueWriteError

    queue = MessageQueue(tmp_path / "q")
    manager = txn_module.TransactionManager(explicit=True)
    mailer = QueuedMailer(queue, transaction_manager=manager)
    txn = manager.begin()
    mailer.send(b"From: a@example.com\nTo: b@example.org\n\nfirst\n")
    real_write = os.write

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(QueueWriteError):
        mailer.send(b"From: a@example.com\nTo: b@example.org\n\nsecond\n")
    monkeypatch.setattr(os, "write", real_write)
    savepoint = txn.savepoint()
    mailer.send(b"From: a@example.com\nTo: b@example.org\n\nthird\n")
    savepoint.rollback()
    with pytest.raises(QueueWriteError, match="vetoed"):
        manager.commit()
    manager.abort()
    assert list(queue.entries()) == []
