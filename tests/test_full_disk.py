"""A full disk never makes a recipient get a message twice, nor stops the rest of the queue.

A message to ``ok@`` (250) and ``defer@`` (451) must record "ok@ delivered" before it
is tried again. The queue reserves the blocks for that record when it claims a message
for several recipients, so a disk that fills up during the SMTP session cannot stop it;
a disk already full when the message is claimed leaves the message untouched. The tests
fill a real tmpfs when this process may mount one (root), and otherwise inject ENOSPC
at the calls that allocate space.

Directory queue only: a full disk is the file system's (the database queue's storage
is the database server's business).
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess

import pytest
import transaction
from smtp_sinks import RecordingHandler, Sink

from mq_transaction import MessageQueue, QueuedMailer
from mq_transaction.delivery_log import DeliveryLog
from mq_transaction.errors import DaemonAlreadyRunning, QueueUnavailableError
from mq_transaction.hooks import Hooks
from mq_transaction.sender import Sender
from mq_transaction.settings import parse_settings
from mq_transaction.states import MessageState, RecipientStatus

OK, DEFER = "ok@example.org", "defer@example.org"


class Disk:
    """A small filesystem that tests can fill up and free again."""

    def __init__(self, root, monkeypatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.filler = root / "filler"
        root.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], capture_output=True)
        self.real = mounted.returncode == 0

    def fill(self) -> None:
        if self.real:
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                for size in (65536, 4096, 1):  # to the last byte
                    try:
                        while True:
                            os.write(fd, b"\0" * size)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)
        else:

            def no_space(*args, **kwargs):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            self.monkeypatch.setattr(os, "posix_fallocate", no_space)
            self.monkeypatch.setattr(os, "write", no_space)  # new files; writes into reserved blocks go on

    def free(self) -> None:
        if self.real:
            self.filler.unlink()
        else:
            self.monkeypatch.undo()

    def unmount(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.root)], check=False)


@pytest.fixture
def disk(tmp_path, monkeypatch):
    disk = Disk(tmp_path / "fs", monkeypatch)
    yield disk
    disk.unmount()


@pytest.fixture
def sink():
    sink = Sink(RecordingHandler())
    sink.behaviour.rcpt_replies = {DEFER: "451 4.3.0 try again later"}
    yield sink
    sink.stop()


def settings_for(queue, sink, **extra):
    raw = {"mq.queue_dir": queue.path, "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(sink.port), "mq.fsync": "false"}
    raw.update({f"mq.{key}": str(value) for key, value in extra.items()})
    return parse_settings(raw)


def queue_message(queue, *to):
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    with mailer.transaction_manager:
        return mailer.send(f"From: app@example.com\nTo: {', '.join(to)}\nSubject: hi\n\nHello\n".encode())


def copies_for(sink, address):
    return sum(address in received.rcpt_tos for received in sink.received)


def test_a_message_for_several_recipients_is_not_sent_while_the_disk_is_full(disk, sink, caplog):
    queue = MessageQueue(disk.root / "queue", fsync=False)
    several = queue_message(queue, OK, DEFER)
    single = queue_message(queue, "solo@example.org")
    disk.fill()
    with caplog.at_level(logging.ERROR, logger="mq_transaction.sender"):
        result = Sender(settings_for(queue, sink)).run()
    assert copies_for(sink, OK) == 0  # not tried: its outcome could not have been recorded
    assert copies_for(sink, "solo@example.org") == 1  # the rest of the queue moves on
    assert [e.queue_id for e in queue.entries(MessageState.QUEUED)] == [several]
    assert single not in [e.queue_id for e in queue.entries()]
    assert result.exit_status == 75
    assert f"queue id {several}" in caplog.text and "no room to record" in caplog.text

    disk.free()
    Sender(settings_for(queue, sink)).run()
    Sender(settings_for(queue, sink)).run(flush=True)
    assert copies_for(sink, OK) == 1
    [entry] = queue.entries(MessageState.DEFERRED)
    envelope, _ = queue.read(entry)
    assert {r.address: r.status for r in envelope.recipients} == {
        OK: RecipientStatus.DELIVERED,
        DEFER: RecipientStatus.DEFERRED,
    }


def test_a_disk_that_fills_during_the_session_still_records_the_delivery(disk, sink):
    queue = MessageQueue(disk.root / "queue", fsync=False)
    queue_message(queue, OK, DEFER)
    deliver = sink.handler.handle_DATA

    async def fill_then_deliver(server, session, envelope):
        disk.fill()
        return await deliver(server, session, envelope)

    sink.handler.handle_DATA = fill_then_deliver
    result = Sender(settings_for(queue, sink)).run()
    sink.handler.handle_DATA = deliver
    assert result.deferred == 1
    for _ in range(3):  # still full: tries again for defer@ only, or not at all
        Sender(settings_for(queue, sink)).run(flush=True)
    assert copies_for(sink, OK) == 1
    disk.free()
    Sender(settings_for(queue, sink)).run(flush=True)
    assert copies_for(sink, OK) == 1


def test_when_the_outcome_cannot_be_written_the_message_is_held_never_requeued(tmp_path, sink, monkeypatch, caplog):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    queue_id = queue_message(queue, OK, DEFER)

    def broken(*args):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "pwrite", broken)  # the write of the new envelope fails
    with caplog.at_level(logging.CRITICAL, logger="mq_transaction.sender"):
        result = Sender(settings_for(queue, sink)).run()
    monkeypatch.undo()
    assert result.exit_status == 75
    assert [e.queue_id for e in queue.entries(MessageState.HELD)] == [queue_id]
    assert "cannot record the outcome" in caplog.text and f"It has reached: {OK}" in caplog.text
    for _ in range(3):
        Sender(settings_for(queue, sink)).run(flush=True)
    assert copies_for(sink, OK) == 1


def test_a_delivery_log_on_a_full_disk_neither_stops_the_run_nor_skips_hooks(tmp_path, disk, sink, caplog):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    for _ in range(3):
        queue_message(queue, "solo@example.org")
    events = []
    hooks = Hooks()
    hooks.add("delivered", events.append)
    delivery_log = DeliveryLog(str(disk.root / "delivery.log"), "logfmt")
    disk.fill()
    with caplog.at_level(logging.ERROR, logger="mq_transaction.sender"):
        result = Sender(settings_for(queue, sink), hooks=hooks, delivery_log=delivery_log).run()
    assert result.delivered == 3 and result.exit_status == 0
    assert len(events) == 3
    assert copies_for(sink, "solo@example.org") == 3
    assert list(queue.entries()) == []
    assert "cannot write the delivery log" in caplog.text
    assert "stays queued" not in caplog.text


def test_the_daemon_lock_is_taken_on_a_full_disk(disk):
    queue = MessageQueue(disk.root / "queue", fsync=False)
    disk.fill()
    queue.daemon_lock()
    with pytest.raises(DaemonAlreadyRunning):
        MessageQueue(disk.root / "queue", fsync=False).daemon_lock()


def test_a_symlinked_daemon_lock_is_refused_and_its_target_untouched(tmp_path):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    os.symlink(precious, os.path.join(queue.path, ".daemon.lock"))
    with pytest.raises(QueueUnavailableError, match="symbolic link"):
        queue.daemon_lock()
    assert precious.read_text() == "keep me\n"


def test_running_out_of_file_descriptors_is_not_a_corrupt_message(tmp_path, sink, monkeypatch, caplog):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    queue_id = queue_message(queue, "solo@example.org")
    real_open = os.open

    def emfile(path, *args, **kwargs):
        if str(path).endswith(queue_id):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", emfile)
    with caplog.at_level(logging.ERROR, logger="mq_transaction.sender"):
        result = Sender(settings_for(queue, sink)).run()
    monkeypatch.undo()
    assert result.exit_status == 75 and result.corrupt == 0
    assert [e.queue_id for e in queue.entries(MessageState.QUEUED)] == [queue_id]
    assert "Too many open files" in caplog.text
    Sender(settings_for(queue, sink)).run()
    assert copies_for(sink, "solo@example.org") == 1
