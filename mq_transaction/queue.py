"""The queue directory: every transition of a message between states.

With :mod:`mq_transaction.queue_directory`, which holds the queue's directories open, this
is the only module that touches files inside a queue. Each state is a directory, each
transition one atomic ``rename`` (or ``unlink``) followed by an ``fsync`` of the
directory. See ``docs/queue.md`` for the table this module mirrors name for name.

Every operation on a message file is made by name relative to the directories
:class:`~mq_transaction.queue_directory.QueueDirectory` opened (``dir_fd``): a directory
swapped for a link after the queue was opened is never followed.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import stat
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from zope.interface import implementer

from . import commit_records, queuefile
from .commit_records import COMMIT_RECORD_END, COMMIT_RECORD_PREFIX, INCOMPLETE_RECORD_MAX_AGE
from .errors import (
    CorruptMessageError,
    DaemonAlreadyRunning,
    MailQueueError,
    QueueFullError,
    QueueUnavailableError,
    QueueWriteError,
    UnknownQueueIdError,
)
from .interfaces import IMailQueue
from .queue_directory import (
    DIR_NAMES,
    Place,
    QueueDirectory,
    listing,
    open_locked,
    read_all,
    scan,
    write_over,
)
from .queue_ids import QUEUE_ID, is_queue_id, new_queue_id, queued_time
from .queuefile import Envelope
from .records import Claim, Entry, claim_each
from .retry_times import RetryTimes
from .states import STATE_DIRS, STATES, TMP_DIR, MessageState
from .watcher import DirectoryWatcher

# The queue ids and the commit records were defined here first: they are still importable from here.
__all__ = [
    "COMMIT_RECORD_END",
    "COMMIT_RECORD_PREFIX",
    "DAEMON_LOCK",
    "INCOMPLETE_RECORD_MAX_AGE",
    "QUEUE_ID",
    "RECORD_RESERVE",
    "FileClaim",
    "MessageQueue",
    "is_queue_id",
    "new_queue_id",
    "queued_time",
]

log = logging.getLogger("mq_transaction.queue")

#: Bytes reserved beyond a queue file's size for the envelope a delivery attempt rewrites
#: (its attempt record and each recipient's reply): the rewrite of a message to several
#: recipients never needs new blocks, so a full disk cannot stop its outcome being recorded.
RECORD_RESERVE = 64 * 1024

#: The daemon's lock file, in the queue root.
DAEMON_LOCK = ".daemon.lock"


@dataclass
class FileClaim(Claim):
    """A claim on a queue file: the open descriptors whose ``flock`` holds it.

    ``_reserved`` is the locked scratch file whose blocks were allocated at claim time to
    record the outcome (see :meth:`MessageQueue.claim`), or None; ``_drop_reserved``
    removes that scratch file from its directory when it goes unused.
    """

    _fds: list[int] = field(default_factory=list)
    _reserved: int | None = None
    _drop_reserved: Callable[[], None] | None = None

    def release(self) -> None:
        """Close the claim's file descriptors (dropping its locks); drop an unused reservation."""
        while self._fds:
            os.close(self._fds.pop())
        if self._reserved is not None:
            fd, self._reserved = self._reserved, None
            try:
                if self._drop_reserved is not None:
                    self._drop_reserved()
            except OSError:
                pass  # (a closed queue): the scratch file left behind is stale, and cleanup() removes it
            finally:
                os.close(fd)


@implementer(IMailQueue)
class MessageQueue:
    """A maildir-style queue directory: the directory implementation of ``IMailQueue``.

    ``MessageQueue(path)`` creates the directory and its layout when missing.
    ``create=False`` opens an existing queue only: a missing ``path`` (or one that is
    not a directory) raises :class:`QueueNotFoundError`, and only the state
    directories missing inside it are made. ``group_access=True`` makes
    directories 0770 and files 0660 (for a web app and a sender running as different
    users in one group); the default is 0700 and 0600. ``fsync=False`` skips every
    fsync, for development and test suites only: a crash may then lose mail.

    The queue root and its state directories are opened once, here, without following
    symbolic links, and each state directory must be owned by the root's owner or by this
    process's user (:class:`QueueWriteError` otherwise). Every later operation works
    inside those open directories, so the queue holds a few file descriptors until
    :meth:`close` (or until it is garbage collected). A forked child may go on using the
    queue its parent opened.
    """

    def __init__(
        self, path: str | os.PathLike, *, create: bool = True, group_access: bool = False, fsync: bool = True
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.location = self.path
        self.fsync = fsync
        self.group_access = group_access
        self.dir_mode = 0o770 if group_access else 0o700
        self.file_mode = 0o660 if group_access else 0o600
        self._daemon_lock_fd: int | None = None
        self._strays_reported: set[str] = set()
        #: The daemon's watchers of new/, moved to a new/ made again (see _reopen_replaced).
        self._watchers: weakref.WeakSet[DirectoryWatcher] = weakref.WeakSet()
        self._dir = QueueDirectory(
            self.path,
            create=create,
            dir_mode=self.dir_mode,
            file_mode=self.file_mode,
            group_access=group_access,
            fsync=fsync,
        )
        self._deferred = RetryTimes(self._dir.state_dir(MessageState.DEFERRED))

    def close(self) -> None:
        """Close the queue's directories (and drop the daemon lock). Idempotent; the queue
        cannot be used afterwards. Claims still held keep their own locks."""
        self._daemon_lock_fd = None
        self._dir.close()

    def __enter__(self) -> MessageQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MessageQueue({self.path!r})"

    # -- the layout ------------------------------------------------------------------------

    def layout_problems(self, places: Iterable[Place] | None = None) -> list[str]:
        """What is wrong with the queue's directories now, one sentence each (none: all well).

        Each name (``new``, ``tmp``...) must still lead to the directory this queue opened:
        one replaced by a symbolic link, removed, or swapped for another directory since
        then is reported, and never followed.
        """
        return self._dir.layout_problems(places)

    def check_layout(
        self, places: Iterable[Place] | None = None, *, error: type[OSError] = QueueUnavailableError
    ) -> None:
        """Raise ``error`` naming each directory of ``places`` (default: all) whose name no
        longer leads to the directory this queue opened (see :meth:`layout_problems`)."""
        self._dir.check_layout(places, error=error)

    def _reopen_replaced(self) -> None:
        """Open again each directory replaced by a real one, and move the watchers of a new
        ``new/`` onto it (see :meth:`QueueDirectory.reopen_replaced`).

        Only for the start of a sender's pass (:meth:`cleanup`, :meth:`due`), when this
        process holds no claim inside a directory that may change.
        """
        self._dir.reopen_replaced(self._follow_reopened)

    def _follow_reopened(self, name: str, fd: int) -> None:
        if name == STATE_DIRS[MessageState.QUEUED]:
            for watcher in list(self._watchers):
                try:
                    watcher.follow(self._dir.dirs[name], fd)
                except OSError as exc:
                    log.error("cannot watch %s (%s): new mail waits for the next wake-up", self._dir.dirs[name], exc)

    def check_writable(self) -> None:
        """Raise :class:`QueueWriteError` unless this process can write every state directory."""
        self.check_layout(error=QueueWriteError)
        for directory in self._dir.dirs.values():
            if not os.access(directory, os.W_OK | os.X_OK):
                raise QueueWriteError(f"queue directory {directory} is not writable by this user")

    # -- writing: tmp -> new -----------------------------------------------------------

    def stage(self, envelope: Envelope, message: bytes) -> str:
        """Write a message durably into ``tmp/`` and return its new queue id.

        Raises :class:`QueueWriteError` when ``tmp/`` or ``new/`` was replaced since the
        queue was opened (the commit could not publish the message).
        """
        self.check_layout((TMP_DIR, MessageState.QUEUED), error=QueueWriteError)
        content = queuefile.encode(envelope, message)
        while True:
            queue_id = new_queue_id(envelope.queued_at)
            try:
                os.close(self._dir.write_new_file(TMP_DIR, queue_id, content))
                return queue_id
            except QueueWriteError as exc:
                if isinstance(exc.__cause__, FileExistsError):
                    continue
                raise

    def _publish(self, queue_ids: list[str]) -> list[tuple[str, OSError]]:
        """Publish a transaction's messages; with more than one, under a commit record.

        The renames of several messages are not atomic together, so a process killed among
        them would publish a part of a committed transaction. Before the first rename, the
        ids are written durably to a commit record in ``tmp/``, locked while the renames
        run; ``cleanup()`` finishes the renames of a record whose process died (roll
        forward). If the record cannot be written (a full disk), the messages are
        published without it, as a single message always is (one rename is atomic).
        """
        record = None
        if len(queue_ids) > 1:
            try:
                record = commit_records.write_commit_record(self._dir, queue_ids)
            except QueueWriteError as exc:
                log.warning(
                    "cannot record the commit of %d messages before publishing them (%s); publishing "
                    "them without it: a crash during the renames would leave some in %s",
                    len(queue_ids),
                    exc,
                    self._dir.dirs[TMP_DIR],
                )
        failures: list[tuple[str, OSError]] | None = None
        try:
            failures = self._rename_into_new(queue_ids)
        finally:
            if record is not None:
                name, fd = record
                # Only a failed rename can have left a message in tmp/ (all of them, if renaming raised).
                unsure = queue_ids if failures is None else [queue_id for queue_id, _ in failures]
                if not any(self._dir.exists(TMP_DIR, queue_id) for queue_id in unsure):
                    self._dir.unlink_quietly(TMP_DIR, name)  # done; a rename that failed is retried by cleanup()
                os.close(fd)
        return failures

    def _rename_into_new(self, queue_ids: list[str]) -> list[tuple[str, OSError]]:
        """Rename from ``tmp/`` into ``new/``, then fsync ``new/``; return the failures."""
        failures: list[tuple[str, OSError]] = []
        tmp, new = self._dir.fd(TMP_DIR), self._dir.fd(MessageState.QUEUED)
        for queue_id in queue_ids:
            try:
                os.rename(queue_id, queue_id, src_dir_fd=tmp, dst_dir_fd=new)
            except OSError as exc:
                failures.append((queue_id, exc))
        try:
            self._dir.sync_dir(MessageState.QUEUED)
        except OSError as exc:
            failures.extend((queue_id, exc) for queue_id in queue_ids)
        return failures

    def publish(self, queue_ids: list[str]) -> list[tuple[str, str]]:
        """Move committed messages from ``tmp/`` to ``new/`` (the commit), then fsync ``new/``.

        Never raises: returns ``(queue id, problem)`` for each message that could not be
        published durably, the problem saying where the message is and what to do.
        """
        try:
            failures = self._publish(queue_ids)
        except Exception as unexpected:  # noqa: BLE001 - the commit's last step must not raise
            failures = [(queue_id, OSError(str(unexpected))) for queue_id in queue_ids]
        if not failures:
            return []
        try:
            layout = "; ".join(self.layout_problems((TMP_DIR, MessageState.QUEUED)))
        except OSError as unusable:
            layout = str(unusable)
        problems = []
        new_dir = self._dir.state_dir(MessageState.QUEUED)
        record = commit_records.record_name(queue_ids)
        for queue_id, exc in failures:
            staged = self._dir.file(TMP_DIR, queue_id)
            if layout:
                problem = f"could not be published: {exc}: {layout}; look for the message as {staged}"
            elif self._dir.exists_quietly(TMP_DIR, queue_id) and self._dir.exists_quietly(TMP_DIR, record):
                problem = (
                    f"could not be published: {exc}; the message is still in {staged}, and the commit "
                    f"record {self._dir.file(TMP_DIR, record)} names it: the next mq-send run retries the rename"
                )
            elif self._dir.exists_quietly(TMP_DIR, queue_id):
                problem = (
                    f"could not be published: {exc}; the message is still in {staged}: "
                    f"move it into {new_dir}/ by hand to send it"
                )
            else:  # renamed, but the fsync of new/ failed: a crash now may lose it
                published = self._dir.file(MessageState.QUEUED, queue_id)
                problem = (
                    f"was published as {published}, but the fsync of {new_dir} failed: {exc}; "
                    "the message may be lost if the system crashes before it is sent"
                )
            problems.append((queue_id, problem))
        return problems

    def discard(self, queue_ids: list[str]) -> None:
        """Remove uncommitted messages from ``tmp/`` (the abort); missing files are fine."""
        for queue_id in queue_ids:
            self._dir.unlink_quietly(TMP_DIR, queue_id)

    def enqueue(self, envelope: Envelope, message: bytes) -> str:
        """Write a message and publish it at once (no transaction); return its queue id."""
        queue_id = self.stage(envelope, message)
        for _queue_id, exc in self._publish([queue_id]):
            # Not durably queued: withdraw it, so that a caller who retries sends it once.
            self.discard([queue_id])
            self._dir.unlink_quietly(MessageState.QUEUED, queue_id)
            raise QueueWriteError(f"cannot publish queue id {queue_id}: {exc.strerror or exc}") from exc
        return queue_id

    def cleanup(self, max_age: float, now: float | None = None) -> list[str]:
        """Remove files older than ``max_age`` seconds from ``tmp/``, and stale ``.*.rewrite`` files.

        These are the leftovers of processes killed mid-request or mid-rewrite; nothing
        else ever removes mail. First, the publication of a transaction whose process died
        while committing it is finished (its commit record names the messages). Returns the
        names removed. Raises :class:`QueueUnavailableError` when a directory was replaced
        by a symbolic link (or by a directory of another user) since the queue was opened.
        """
        now = time.time() if now is None else now
        self._reopen_replaced()
        being_published = commit_records.finish_interrupted_commits(self._dir, now)
        removed = []
        for name in DIR_NAMES:
            in_tmp = name == TMP_DIR
            dir_fd = self._dir.fd_named(name)
            for entry in scan(dir_fd, dotfiles=True):
                if not in_tmp and not (entry.name.startswith(".") and entry.name.endswith(".rewrite")):
                    continue
                if in_tmp and (entry.name.startswith(COMMIT_RECORD_PREFIX) or entry.name in being_published):
                    continue  # rolled forward above, or still in use
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                        os.unlink(entry.name, dir_fd=dir_fd)
                        removed.append(entry.name)
                        log.info(
                            "removed stale file %s (older than %.0fs)",
                            os.path.join(self._dir.dirs[name], entry.name),
                            max_age,
                        )
                except FileNotFoundError:
                    continue
        return removed

    # -- the sender's side ---------------------------------------------------------------

    def recover_stale_claims(self) -> list[str]:
        """Move messages whose sending process died from ``sending/`` back to ``new/``.

        A live sender holds an ``flock`` on its claimed file; the lock dies with the
        process, so an unlocked file in ``sending/`` is an orphan.
        """
        recovered = []
        sending = self._dir.fd(MessageState.SENDING)
        for name in [entry.name for entry in scan(sending)]:
            try:
                fd = open_locked(name, sending)
            except OSError as exc:
                log.error(
                    "queue id %s: cannot open %s: %s", name, self._dir.file(MessageState.SENDING, name), exc.strerror
                )
                continue
            if fd is None:
                continue
            try:
                self._dir.rename(name, MessageState.SENDING, MessageState.QUEUED)
                recovered.append(name)
                log.warning("queue id %s: its sender died mid-delivery; back in the queue", name)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        if recovered:
            self._dir.sync_dir(MessageState.QUEUED)
            self._dir.sync_dir(MessageState.SENDING)
        return recovered

    def due(self, now: float | None = None, flush: bool = False) -> list[str]:
        """Queue ids of messages due for delivery, oldest first: all of ``new/`` and the
        deferred ones whose retry time has come (all deferred ones with ``flush``).

        Raises :class:`QueueUnavailableError` when a directory was replaced by a symbolic
        link (or by a directory of another user) since the queue was opened.
        """
        now = time.time() if now is None else now
        self._reopen_replaced()
        ids = []
        for entry in scan(self._dir.fd(MessageState.QUEUED)):
            if is_queue_id(entry.name):
                ids.append(entry.name)
            else:
                self._report_stray(self._dir.file(MessageState.QUEUED, entry.name))
        retry_times = self._deferred.retry_times(self._dir.fd(MessageState.DEFERRED))
        ids.extend(queue_id for queue_id, at in retry_times.items() if flush or at <= now)
        for path in self._deferred.strays:
            self._report_stray(path)
        ids.sort()
        return ids

    def _report_stray(self, path: str) -> None:
        """Say once per process that a file in the queue is no message (and is left alone)."""
        if path not in self._strays_reported:
            self._strays_reported.add(path)
            log.warning("%s is not a message (its name is not a queue id); skipped (mq-queue status names it)", path)

    def next_retry_time(self) -> float | None:
        """The earliest retry time among deferred messages, or None when there are none."""
        return min(self._deferred.retry_times(self._dir.fd(MessageState.DEFERRED)).values(), default=None)

    #: A claim is a local rename: one at a time, none held ahead (``IMailQueue.claim_batch_size``).
    claim_batch_size = 1

    def claim_many(self, queue_ids: list[str]) -> tuple[list[Claim], list[MailQueueError]]:
        """Claim each listed message that can be claimed (``claim`` of each, in order)."""
        return claim_each(self, queue_ids)

    def claim(self, queue_id: str) -> Claim | None:
        """Claim a due message: lock it, move it to ``sending/`` and read it.

        Returns None when another sender got it first. Raises
        :class:`CorruptMessageError` (after moving the file to ``corrupt/``) when the
        file cannot be decoded.
        """
        for state in (MessageState.QUEUED, MessageState.DEFERRED):
            try:
                fd = open_locked(queue_id, self._dir.fd(state))
            except OSError as exc:  # EMFILE, EACCES...: a fault of this process or host, not of the message
                raise QueueUnavailableError(
                    f"queue id {queue_id}: cannot open {self._dir.file(state, queue_id)}: {exc.strerror}; "
                    "it stays where it is"
                ) from exc
            if fd is None:
                continue
            try:
                self._dir.rename(queue_id, state, MessageState.SENDING)
            except FileNotFoundError:
                os.close(fd)  # another sender moved it between our open and rename
                continue
            try:
                envelope, message = queuefile.decode(read_all(fd))
            except CorruptMessageError as exc:
                os.close(fd)
                self._move(queue_id, MessageState.SENDING, MessageState.CORRUPT)
                raise CorruptMessageError(f"queue id {queue_id}: {exc}; moved to corrupt") from exc
            except OSError as exc:  # EIO, ENOMEM: the file may well be fine
                self._give_back(queue_id, state, fd)
                raise QueueUnavailableError(
                    f"queue id {queue_id}: cannot read it: {exc.strerror or exc}; it stays queued"
                ) from exc
            claim = FileClaim(queue_id, envelope, message, [fd])
            if len(envelope.undelivered()) > 1:
                try:
                    needed = os.fstat(fd).st_size + RECORD_RESERVE + 256 * len(envelope.recipients)
                    claim._reserved = self._reserve_record_space(queue_id, needed)
                    claim._drop_reserved = functools.partial(
                        self._dir.unlink_quietly, MessageState.SENDING, _scratch_name(queue_id)
                    )
                except OSError as exc:
                    self._give_back(queue_id, state, fd)
                    raise QueueFullError(
                        f"queue id {queue_id} (Message-ID {envelope.message_id}): not sent now: no room to "
                        f"record the outcome of a delivery to several recipients ({exc.strerror or exc} in "
                        f"{self._dir.state_dir(MessageState.SENDING)}); it stays queued, untouched"
                    ) from exc
            return claim
        return None

    def _give_back(self, queue_id: str, state: MessageState, fd: int) -> None:
        """Undo a claim before anything was tried: back to ``state``, unlocked."""
        try:
            self._dir.rename(queue_id, MessageState.SENDING, state)
        finally:
            os.close(fd)  # if the rename failed, the next run recovers it from sending/

    def _reserve_record_space(self, queue_id: str, needed: int) -> int:
        """Allocate, before any delivery, the blocks that recording its outcome will need.

        A message to several recipients may be delivered to some and deferred for others;
        that outcome must then be written, or the delivered ones would be sent it again.
        So the rewrite's scratch file is created and ``needed`` bytes allocated now (the
        queue file's size, :data:`RECORD_RESERVE` and room for each recipient's reply), and
        :meth:`_rewrite` writes into them. Returns the scratch file's locked descriptor.
        """
        scratch = _scratch_name(queue_id)
        sending = self._dir.fd(MessageState.SENDING)
        self._dir.unlink_quietly(MessageState.SENDING, scratch)
        fd = os.open(
            scratch, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, self.file_mode, dir_fd=sending
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.posix_fallocate(fd, 0, needed)
        except OSError:
            os.close(fd)
            self._dir.unlink_quietly(MessageState.SENDING, scratch)
            raise
        return fd

    def _rewrite(self, claim: Claim, state: MessageState, mtime: float | None = None) -> None:
        """Replace the claimed file in ``state`` with one holding the claim's new envelope.

        The replacement is locked before it is published, so a sweeper never mistakes it
        for an orphan.
        """
        scratch = _scratch_name(claim.queue_id)
        content = queuefile.encode(claim.envelope, claim.message)
        file_claim = _file_claim(claim)
        if file_claim._reserved is not None and state == MessageState.SENDING:
            fd, file_claim._reserved = file_claim._reserved, None
            file_claim._fds.append(fd)
            try:
                write_over(fd, content)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                raise QueueWriteError(f"cannot write {self._dir.file(state, scratch)}: {exc.strerror or exc}") from exc
        else:
            self._dir.unlink_quietly(state, scratch)
            fd = self._dir.write_new_file(state, scratch, content, mtime, lock=True)
            file_claim._fds.append(fd)
        self._dir.rename(scratch, state, state, claim.queue_id)

    def _move(self, queue_id: str, source: MessageState, target: MessageState) -> None:
        self._dir.rename(queue_id, source, target)
        self._dir.sync_dir(target)
        self._dir.sync_dir(source)

    def finish_delivered(self, claim: Claim) -> None:
        """The message reached every recipient: remove it, durably, at once."""
        os.unlink(claim.queue_id, dir_fd=self._dir.fd(MessageState.SENDING))
        self._dir.sync_dir(MessageState.SENDING)
        claim.release()

    def finish_deferred(self, claim: Claim, next_attempt: float) -> None:
        """Some recipients are still to be tried: store the envelope, move to ``deferred/``.

        The file's mtime is its next attempt time.
        """
        claim.envelope.next_attempt = next_attempt
        self._rewrite(claim, MessageState.SENDING, mtime=next_attempt)
        self._move(claim.queue_id, MessageState.SENDING, MessageState.DEFERRED)
        claim.release()

    def finish_failed(self, claim: Claim) -> None:
        """A recipient was refused for good or the message expired: move to ``failed/``."""
        claim.envelope.next_attempt = None
        self._rewrite(claim, MessageState.SENDING)
        self._move(claim.queue_id, MessageState.SENDING, MessageState.FAILED)
        claim.release()

    def unclaim(self, claim: Claim, envelope_changed: bool = False) -> None:
        """Give a claimed message back to ``new/`` untouched in its schedule (server-level
        failure, or shutdown before it was tried)."""
        if envelope_changed:
            self._rewrite(claim, MessageState.SENDING)
        self._move(claim.queue_id, MessageState.SENDING, MessageState.QUEUED)
        claim.release()

    # -- the operator's side -----------------------------------------------------------

    def entries(self, state: MessageState | str | None = None) -> Iterator[Entry]:
        """Every message in ``state`` (or in all states), oldest first within a state.

        A file whose name is not a queue id is no message: see :meth:`not_messages`.
        Raises :class:`QueueUnavailableError` when a directory listed was replaced since
        the queue was opened.
        """
        states = [MessageState(state)] if state else STATES
        self.check_layout(states)
        for name in states:
            found = []
            for entry in scan(self._dir.fd(name)):
                if not is_queue_id(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append(Entry(entry.name, name, info.st_mtime, info.st_size, info.st_ctime))
            yield from sorted(found, key=lambda e: e.queue_id)

    def not_messages(self, state: MessageState | str | None = None) -> list[str]:
        """Paths of what lies in the state directories (of ``state``) and is no message: a
        file whose name is not a queue id (``hold/README``), a directory, a symbolic link.

        Dot-files are the queue's own scratch files and are not listed.
        """
        found = []
        for name in [MessageState(state)] if state else STATES:
            for entry in listing(self._dir.fd(name)):
                if entry.name.startswith("."):
                    continue
                try:
                    regular = entry.is_file(follow_symlinks=False)
                except OSError:
                    regular = False
                if not (regular and is_queue_id(entry.name)):
                    found.append(self._dir.file(name, entry.name))
        return sorted(found)

    def find(self, queue_id: str) -> Entry:
        """Return the entry for ``queue_id``, or raise :class:`UnknownQueueIdError`."""
        if not isinstance(queue_id, str) or not is_queue_id(queue_id):
            raise UnknownQueueIdError(
                f"{queue_id!r} is not a queue id (expected e.g. 20261128T151136123456Z-9f3a2b1c0d)"
            )
        self.check_layout(STATES)
        for state in STATES:
            try:
                info = os.stat(queue_id, dir_fd=self._dir.fd(state), follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                return Entry(queue_id, state, info.st_mtime, info.st_size, info.st_ctime)
        raise UnknownQueueIdError(f"queue id {queue_id} is not in the queue at {self.path}")

    def _read_file(self, entry: Entry) -> bytes:
        return self._dir.read_regular(entry.state, entry.queue_id)

    def read(self, entry: Entry) -> tuple[Envelope, bytes]:
        """Return the envelope and message of a listed entry (raises ``CorruptMessageError``)."""
        return queuefile.decode(self._read_file(entry))

    def read_raw(self, entry: Entry) -> bytes:
        """Return a listed entry's file content as it is on disk."""
        return self._read_file(entry)

    def lock(self, entry: Entry) -> Claim | None:
        """Lock a message where it lies (for the operator tool); None when a sender holds it."""
        self.check_layout([entry.state])
        try:
            fd = open_locked(entry.queue_id, self._dir.fd(entry.state))
        except OSError as exc:
            raise QueueWriteError(f"queue id {entry.queue_id}: cannot open it: {exc.strerror}") from exc
        if fd is None:
            return None
        try:
            envelope, message = queuefile.decode(read_all(fd)) if entry.state != MessageState.CORRUPT else (None, b"")
        except CorruptMessageError:
            envelope, message = None, b""
        return FileClaim(entry.queue_id, envelope, message, [fd])  # type: ignore[arg-type] # None: see Claim

    def move(self, claim: Claim, source: MessageState, target: MessageState, envelope_changed: bool = False) -> None:
        """Move a locked message between states on an operator's request."""
        self.check_layout([source, target])
        if envelope_changed:
            self._rewrite(claim, source)
        self._move(claim.queue_id, source, target)
        claim.release()

    def remove(self, claim: Claim, state: MessageState) -> None:
        """Remove a locked message for good on an operator's request."""
        self.check_layout([state])
        os.unlink(claim.queue_id, dir_fd=self._dir.fd(state))
        self._dir.sync_dir(state)
        claim.release()

    # -- the daemon's side -------------------------------------------------------------

    def watch(self, wake_fd: int, poll_interval: float) -> DirectoryWatcher:
        """Watch ``new/`` for committed mail (inotify; polling where it is missing)."""
        watcher = DirectoryWatcher(
            self._dir.state_dir(MessageState.QUEUED), wake_fd, poll_interval, dir_fd=self._dir.fd(MessageState.QUEUED)
        )
        self._watchers.add(watcher)
        return watcher

    def daemon_lock(self) -> None:
        """Take ``.daemon.lock`` in the queue directory for the life of this process: one
        daemon per queue directory. Raise :class:`DaemonAlreadyRunning` when another holds it."""
        if self._daemon_lock_fd is not None:
            return
        path = os.path.join(self.path, DAEMON_LOCK)
        root = self._dir.root()
        try:
            # Never through a symbolic link: whoever can write the queue root could point it at
            # a file of the daemon's user (or root's), which would then be truncated.
            fd = os.open(
                DAEMON_LOCK, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=root
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise QueueUnavailableError(
                    f"{path} is a symbolic link: refusing to use it as the daemon lock; remove it"
                ) from exc
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise QueueUnavailableError(f"{path} is not a regular file: refusing to use it as the daemon lock")
            # A hard link to another file (made by whoever can write the queue root) would
            # have that file truncated; so would a file of an unexpected user.
            if info.st_nlink != 1:
                raise QueueUnavailableError(
                    f"{path} has {info.st_nlink} hard links: refusing to use it as the daemon lock (it may be "
                    "another file); remove it"
                )
            root_owner = os.fstat(root).st_uid
            if info.st_uid not in (root_owner, os.geteuid()):
                raise QueueUnavailableError(
                    f"{path} belongs to user id {info.st_uid}, not to the owner of {self.path} (user id "
                    f"{root_owner}) nor to this user (user id {os.geteuid()}): refusing it as the daemon lock; "
                    "remove it"
                )
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonAlreadyRunning(
                f"another mq-send --daemon is already running on {self.path} (it holds {path})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the PID is for people; the lock is the flock, which needs no free space
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            log.warning("cannot write this daemon's PID into %s (%s); the lock is held all the same", path, exc)
        self._daemon_lock_fd = fd
        self._dir.hold(DAEMON_LOCK, fd)  # closed with the queue


def _scratch_name(queue_id: str) -> str:
    return f".{queue_id}.rewrite"


def _file_claim(claim: Claim) -> FileClaim:
    if not isinstance(claim, FileClaim):
        raise TypeError(f"{claim!r} is not a claim of a MessageQueue")
    return claim
