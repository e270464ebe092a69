"""A hostile queue directory: symbolic links and foreign owners are refused, never followed.

In the two-user setup the web app owns the queue root. A compromised web app must not be
able to make the sender (or root) write, move, delete or truncate files it could not
touch itself: the queue opens its root and state directories once, without following
links, and works by name inside those open directories. A directory swapped for a link
after that is never followed, and every operation says which directory and what is wrong.

Directory queue only: links and owners of directories.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import signal
import time

import pytest
import transaction
from daemon_processes import ready_line, start_daemon, wait_for
from smtp_sinks import RecordingHandler, Sink

from mq_transaction import MessageQueue, QueuedMailer, cli_queue, cli_send, queue_admin
from mq_transaction.errors import MailQueueError, QueueUnavailableError, QueueWriteError
from mq_transaction.exit_status import QueueExit, SendExit
from mq_transaction.queue import new_queue_id
from mq_transaction.queuefile import Envelope, encode
from mq_transaction.sender import Sender
from mq_transaction.settings import parse_settings
from mq_transaction.states import STATE_DIRS, TMP_DIR

OLD = time.time() - 3 * 86400
DIRECTORIES = [TMP_DIR, *STATE_DIRS.values()]
MESSAGE = b"From: app@example.com\nTo: bob@example.org\nSubject: hi\n\nHello\n"


def victim_directory(tmp_path):
    """A directory outside the queue, holding what a hostile link would aim at: an old file
    (clean-up's prey), a valid queue file under a queue id (a sender's), a scratch file."""
    victim = tmp_path / "victim"
    victim.mkdir()
    precious = victim / "precious.db"
    precious.write_text("not mail\n")
    outsider = victim / new_queue_id(OLD)
    outsider.write_bytes(
        encode(Envelope.new("app@example.com", ["victim@example.org"], OLD, "<v@example.org>"), MESSAGE)
    )
    (victim / f".{outsider.name}.rewrite").write_bytes(b"scratch")
    for path in victim.iterdir():
        os.utime(path, (OLD, OLD))
    return victim, precious


def snapshot(directory) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory``: content and mtime."""
    found = {}
    for parent, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(parent, name)
            found[os.path.relpath(path, directory)] = (open(path, "rb").read(), os.stat(path).st_mtime_ns)
    return found


def swap_for_link(queue_root, name, target, how: str) -> None:
    """Replace the queue's directory ``name`` by a link to ``target``; the real one is
    removed (``removed``) or kept beside it as ``name.old`` (``moved``)."""
    directory = os.path.join(queue_root, name)
    if how == "removed":
        shutil.rmtree(directory)
    else:
        os.rename(directory, directory + ".old")
    os.symlink(target, directory)


@pytest.fixture
def sink():
    sink = Sink(RecordingHandler())
    yield sink
    sink.stop()


def settings_for(queue_dir, sink):
    return parse_settings(
        {
            "mq.queue_dir": str(queue_dir),
            "mq.smtp_host": "127.0.0.1",
            "mq.smtp_port": str(sink.port),
            "mq.fsync": "false",
        }
    )


def commit(queue: MessageQueue, body: bytes = MESSAGE) -> str:
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    with mailer.transaction_manager:
        return mailer.send(body)


def test_a_state_directory_replaced_by_a_symlink_is_refused_at_open(tmp_path):
    victim, precious = victim_directory(tmp_path)
    MessageQueue(tmp_path / "queue")
    shutil.rmtree(tmp_path / "queue" / "tmp")
    os.symlink(victim, tmp_path / "queue" / "tmp")
    with pytest.raises(QueueWriteError, match=f"{tmp_path / 'queue' / 'tmp'} is a symbolic link"):
        MessageQueue(tmp_path / "queue")
    assert precious.exists()


def test_a_queue_root_that_is_a_symlink_is_refused_with_its_real_path(tmp_path):
    MessageQueue(tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "queue")
    with pytest.raises(QueueWriteError, match=f"is a symbolic link.*give the real directory \\({tmp_path / 'real'}\\)"):
        MessageQueue(tmp_path / "queue", create=False)


@pytest.mark.parametrize("how", ["removed", "moved"])
@pytest.mark.parametrize("name", DIRECTORIES)
def test_a_directory_swapped_for_a_symlink_after_open_is_never_followed(tmp_path, sink, capsys, name, how):
    victim, _ = victim_directory(tmp_path)
    root = tmp_path / "queue"
    queue = MessageQueue(root, fsync=False)
    queued = commit(queue)
    held = commit(queue)
    queue_admin.hold(queue, [held])
    settings = settings_for(root, sink)
    before = snapshot(victim)
    swap_for_link(root, name, victim, how)
    moved_away = snapshot(f"{root / name}.old") if how == "moved" else {}
    where = f"queue directory {root / name} is a symbolic link (to {victim})"

    # The application's send(): refused before the commit when it would write or publish there.
    if name in (TMP_DIR, "new"):
        with pytest.raises(QueueWriteError, match=re.escape(f"{where} since this process opened the queue: refusing")):
            commit(queue)
    else:
        commit(queue)

    # A sender run on the queue it opened: no delivery, no traceback, exit 75 naming the directory.
    result = Sender(settings, queue=queue).run()
    assert result.exit_status == SendExit.TEMPFAIL
    assert where in result.queue_error
    assert sink.received == []
    with pytest.raises(QueueUnavailableError, match=re.escape(where)):
        queue.cleanup(max_age=3600)

    # The operator's commands on the open queue: refused where they would touch that directory.
    for command in (queue_admin.hold, queue_admin.release, queue_admin.discard):
        try:
            command(queue, [queued, held])
        except MailQueueError as exc:
            assert where in str(exc) and name != TMP_DIR
    # A new process (mq-send, mq-queue) refuses the queue at open, with the same words.
    assert cli_send.main(["--queue-dir", str(root), "--smtp-host", "127.0.0.1", "--smtp-port", str(sink.port)]) == 2
    assert cli_queue.main(["--queue-dir", str(root), "discard", queued]) == QueueExit.USAGE
    err = capsys.readouterr().err
    assert err.count(f"queue directory {root / name} is a symbolic link (to {victim})") == 2
    assert "Traceback" not in err

    assert snapshot(victim) == before  # nothing written, renamed or removed outside the queue
    if how == "moved":
        assert snapshot(f"{root / name}.old") == moved_away


def test_cleanup_still_removes_stale_files_of_the_real_tmp(tmp_path):
    queue = MessageQueue(tmp_path / "queue")
    stale = tmp_path / "queue" / "tmp" / "20261127T101010123456Z-0123456789"
    stale.write_bytes(b"left by a killed request")
    os.utime(stale, (OLD, OLD))
    assert queue.cleanup(max_age=3600) == [stale.name]
    assert not stale.exists()


def test_a_directory_recreated_by_an_operator_is_taken_up_by_the_next_pass(tmp_path, sink, caplog):
    root = tmp_path / "queue"
    queue = MessageQueue(root, fsync=False)
    shutil.rmtree(root / "new")
    os.mkdir(root / "new", 0o700)
    with caplog.at_level(logging.WARNING, logger="mq_transaction.queue"):
        assert queue.due() == []
    assert f"queue directory {root / 'new'} was replaced by another directory" in caplog.text
    queue_id = commit(MessageQueue(root, fsync=False))  # another process publishes into the new new/
    assert queue.due() == [queue_id]
    assert Sender(settings_for(root, sink), queue=queue).run().exit_status == SendExit.OK
    assert len(sink.received) == 1


def test_a_daemon_lock_hard_linked_to_another_file_is_refused(tmp_path):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    os.link(precious, tmp_path / "queue" / ".daemon.lock")
    with pytest.raises(QueueUnavailableError, match="has 2 hard links: refusing"):
        queue.daemon_lock()
    assert precious.read_text() == "keep me\n"


def test_a_state_directory_owned_by_someone_else_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test changes a directory's owner: run the suite as root, as CI does")
    MessageQueue(tmp_path / "queue")
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(tmp_path / "queue" / "deferred", nobody, -1)
    with pytest.raises(QueueWriteError, match=f"belongs to user id {nobody}"):
        MessageQueue(tmp_path / "queue")


def test_a_directory_swapped_for_one_of_another_user_is_refused_by_the_next_pass(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test changes a directory's owner: run the suite as root, as CI does")
    root = tmp_path / "queue"
    queue = MessageQueue(root, fsync=False)
    nobody = pwd.getpwnam("nobody").pw_uid
    shutil.rmtree(root / "sending")
    os.mkdir(root / "sending")
    os.chown(root / "sending", nobody, -1)
    with pytest.raises(QueueUnavailableError, match=f"{root / 'sending'} belongs to user id {nobody}"):
        queue.due()


class SwapDuringData(RecordingHandler):
    """A server that swaps a queue directory for a link while it receives a message: the
    sender has claimed it and will record its outcome through directories it opened before."""

    def __init__(self, swap) -> None:
        super().__init__()
        self.swap = swap

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.swap()
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("how", ["removed", "moved"])
@pytest.mark.parametrize("name", ["sending", "deferred"])
def test_a_swap_during_a_delivery_does_not_redirect_its_outcome(tmp_path, name, how):
    victim, _ = victim_directory(tmp_path)
    root = tmp_path / "queue"
    queue = MessageQueue(root, fsync=False)
    queue_id = commit(queue, b"From: app@example.com\nTo: ok@example.org, later@example.org\n\nHello\n")
    before = snapshot(victim)
    server = Sink(SwapDuringData(lambda: swap_for_link(root, name, victim, how)))
    server.behaviour.rcpt_replies = {"later@example.org": "451 4.3.0 try again later"}
    try:
        result = Sender(settings_for(root, server), queue=queue).run()
    finally:
        server.stop()
    assert len(server.received) == 1
    assert result.exit_status in (SendExit.OK, SendExit.TEMPFAIL)
    assert snapshot(victim) == before
    kept = [os.path.relpath(path, root) for path in root.rglob(queue_id)]
    if name == "deferred":  # its outcome went where the sender opened deferred/, or aside to hold/
        assert kept == (["deferred.old/" + queue_id] if how == "moved" else ["hold/" + queue_id])


@pytest.mark.slow
def test_a_daemon_names_a_swapped_directory_sends_nothing_through_it_and_recovers(tmp_path, sink):
    victim, _ = victim_directory(tmp_path)
    root = tmp_path / "queue"
    MessageQueue(root, fsync=False)
    daemon, lines = start_daemon(["--queue-dir", str(root)], sink.port)
    try:
        commit(MessageQueue(root, fsync=False))
        assert wait_for(lambda: len(sink.received) == 1)
        before = snapshot(victim)
        swap_for_link(root, "new", victim, "moved")
        daemon.send_signal(signal.SIGHUP)  # wakes it for a pass (and reopens its logs)
        where = f"queue directory {root / 'new'} is a symbolic link (to {victim})"
        assert wait_for(lambda: any(where in line for line in lines))
        os.unlink(root / "new")  # the operator puts the real directory back
        os.rename(root / "new.old", root / "new")
        commit(MessageQueue(root, fsync=False))
        assert wait_for(lambda: len(sink.received) == 2, timeout=30)  # after its back-off
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
    assert [received.rcpt_tos for received in sink.received] == [["bob@example.org"]] * 2  # never victim@
    assert snapshot(victim) == before
    assert "Traceback" not in "".join(lines)


@pytest.mark.slow
def test_a_daemon_watches_a_new_directory_made_again_by_an_operator(tmp_path, sink):
    root = tmp_path / "queue"
    MessageQueue(root, fsync=False)
    daemon, lines = start_daemon(["--queue-dir", str(root)], sink.port)
    try:
        assert "waking by inotify" in ready_line(lines)
        shutil.rmtree(root / "new")
        os.mkdir(root / "new", 0o700)
        daemon.send_signal(signal.SIGHUP)  # wakes it for a pass, which takes up the new directory
        assert wait_for(lambda: any(f"{root / 'new'} was replaced by another directory" in line for line in lines))
        commit(MessageQueue(root, fsync=False))
        # Woken by its watch on the new new/: not at its next minute's housekeeping.
        assert wait_for(lambda: len(sink.received) == 1, timeout=5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
