"""The queue directory: its layout, and every transition of a message between states.

This is the only module that builds paths inside a queue. Each state is a directory,
each transition one atomic ``rename`` (or ``unlink``) followed by an ``fsync`` of the
directory. See ``docs/queue.md`` for the table this module mirrors name for name.
"""

from __future__ import annotations

import calendar
import datetime
import errno
import fcntl
import functools
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from zope.interface import implementer

from . import queuefile
from .errors import (
    CorruptMessageError,
    DaemonAlreadyRunning,
    QueueFullError,
    QueueNotFoundError,
    QueueUnavailableError,
    QueueWriteError,
    UnknownQueueIdError,
)
from .interfaces import IMailQueue
from .queuefile import Envelope
from .records import Claim, Entry
from .states import STATE_DIRS, STATES, TMP_DIR, MessageState
from .watcher import DirectoryWatcher

log = logging.getLogger("mq_transaction.queue")

#: Bytes reserved beyond a queue file's size for the envelope a delivery attempt rewrites
#: (its attempt record and each recipient's reply): the rewrite of a message to several
#: recipients never needs new blocks, so a full disk cannot stop its outcome being recorded.
RECORD_RESERVE = 64 * 1024

#: A commit record in ``tmp/``: the ids of a transaction's messages, one per line, then this end line.
COMMIT_RECORD_PREFIX = ".commit-"
COMMIT_RECORD_END = "end"
#: An unlocked commit record without its end line is removed once this old (seconds): its
#: process died while writing it, before any of its messages was published.
INCOMPLETE_RECORD_MAX_AGE = 600.0

#: Where a message lies: a state, or ``TMP_DIR`` while its transaction has not committed.
_Place = MessageState | str

#: A queue id: UTC time of queueing to the microsecond, then 10 random hex digits.
QUEUE_ID = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{10}$")


def new_queue_id(now: float | None = None) -> str:
    """Return a fresh, time-ordered queue id such as ``20261128T151136123456Z-9f3a2b1c0d``."""
    now = time.time() if now is None else now
    whole = int(now)
    micro = int((now - whole) * 1_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(whole)) + f"{micro:06d}Z-{secrets.token_hex(5)}"


def queued_time(queue_id: str) -> float:
    """The Unix time a message was queued, read from its queue id."""
    seconds = calendar.timegm(time.strptime(queue_id[:15], "%Y%m%dT%H%M%S"))
    return seconds + int(queue_id[15:21]) / 1_000_000


def is_queue_id(value: str) -> bool:
    """True when ``value`` has the form of a queue id (so it cannot name a path) and its
    time is a real one (``20261399T...`` is a stray file's name, not a message's)."""
    if not QUEUE_ID.fullmatch(value):
        return False
    return _real_day(value[0:8]) and value[9:11] < "24" and value[11:13] < "60" and value[13:15] < "60"


@functools.lru_cache(maxsize=4096)
def _real_day(day: str) -> bool:
    """True for a real calendar day ``YYYYMMDD``: cached, since a queue's ids share few days
    (``mq-queue status`` checks every name of a 100,000-message queue)."""
    try:
        datetime.date(int(day[0:4]), int(day[4:6]), int(day[6:8]))
    except ValueError:
        return False
    return True


@dataclass
class FileClaim(Claim):
    """A claim on a queue file: the open descriptors whose ``flock`` holds it.

    ``_reserved`` is the locked scratch file whose blocks were allocated at claim time to
    record the outcome (see :meth:`MessageQueue.claim`), or None.
    """

    _fds: list[int] = field(default_factory=list)
    _reserved: int | None = None
    _reserved_path: str = ""

    def release(self) -> None:
        """Close the claim's file descriptors (dropping its locks); drop an unused reservation."""
        while self._fds:
            os.close(self._fds.pop())
        if self._reserved is not None:
            _unlink_quietly(self._reserved_path)
            os.close(self._reserved)
            self._reserved = None


class _RetryTimes:
    """The retry times of ``deferred/`` (each file's mtime), read again only when it changed.

    The daemon asks for due messages at every wake-up; with 100,000 deferred messages a
    ``stat`` of each costs most of a second. Every change to the directory's entries (a
    message deferred, claimed, moved by the operator) changes the directory's own mtime,
    so one ``stat`` of the directory tells whether the cached times still hold. A stamp
    younger than :data:`FRESH_STAMP` seconds is not trusted (file times have a coarse clock:
    two changes within one tick leave the same mtime), so the directory is read again.
    """

    FRESH_STAMP = 1.0

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._stamp: tuple[int, int, int] | None = None
        self._times: dict[str, float] = {}
        #: Paths in the directory that are no message (their name is not a queue id).
        self.strays: list[str] = []
        self._lock = threading.Lock()

    def retry_times(self) -> dict[str, float]:
        """Queue id -> retry time of every deferred message (do not modify it)."""
        with self._lock:
            try:
                info = os.stat(self.directory)
            except FileNotFoundError:
                return {}
            stamp = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns)
            if stamp != self._stamp:
                times = {}
                strays = []
                for entry in _scan(self.directory):
                    if not is_queue_id(entry.name):
                        strays.append(entry.path)
                        continue
                    try:
                        times[entry.name] = entry.stat().st_mtime
                    except FileNotFoundError:
                        continue
                self._times, self.strays = times, strays
                self._stamp = stamp if time.time() - info.st_mtime > self.FRESH_STAMP else None
            return self._times


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
    """

    def __init__(
        self, path: str | os.PathLike, *, create: bool = True, group_access: bool = False, fsync: bool = True
    ) -> None:
        if not create and not os.path.isdir(path):
            raise QueueNotFoundError(f"{os.fspath(path)} does not exist or is not a directory")
        self.path = os.path.abspath(os.fspath(path))
        self.location = self.path
        self._daemon_lock_fd: int | None = None
        self.fsync = fsync
        self.group_access = group_access
        self.dir_mode = 0o770 if group_access else 0o700
        self.file_mode = 0o660 if group_access else 0o600
        self._dirs = {name: os.path.join(self.path, name) for name in (TMP_DIR, *STATE_DIRS.values())}
        self._deferred = _RetryTimes(self._dirs[STATE_DIRS[MessageState.DEFERRED]])
        self._strays_reported: set[str] = set()
        for directory in (self.path, *self._dirs.values()):
            try:
                os.mkdir(directory, self.dir_mode)
            except FileExistsError:
                if not os.path.isdir(directory):
                    raise QueueWriteError(f"queue path {directory} exists and is not a directory") from None
                continue
            except OSError as exc:
                raise QueueWriteError(f"cannot create queue directory {directory}: {exc.strerror}") from exc
            os.chmod(directory, self.dir_mode)
        self._check_state_directories()

    def _check_state_directories(self) -> None:
        """Refuse a state directory that is a symbolic link or belongs to an unexpected user.

        In the two-user setup the web app owns the queue root and could replace ``tmp/`` by
        a link to a directory of the sender's user (or root's), whose old files clean-up
        would then delete. A state directory must be a real directory owned by the owner of
        the queue root or by this process's user.
        """
        root_owner = os.stat(self.path).st_uid
        for directory in self._dirs.values():
            info = os.lstat(directory)
            if stat.S_ISLNK(info.st_mode):
                raise QueueWriteError(
                    f"queue directory {directory} is a symbolic link: refusing to use it; "
                    "replace it by a real directory (see docs/queue.md)"
                )
            if info.st_uid not in (root_owner, os.geteuid()):
                raise QueueWriteError(
                    f"queue directory {directory} belongs to user id {info.st_uid}, not to the owner of "
                    f"{self.path} (user id {root_owner}) nor to this user (user id {os.geteuid()}): refusing it"
                )

    def __repr__(self) -> str:
        return f"MessageQueue({self.path!r})"

    # -- paths (private: no other module builds them) -------------------------------

    def _state_dir(self, state: MessageState) -> str:
        return self._dirs[STATE_DIRS[state]]

    def _file(self, place: _Place, queue_id: str) -> str:
        return os.path.join(self._dirs[TMP_DIR if place == TMP_DIR else STATE_DIRS[MessageState(place)]], queue_id)

    def _sync_dir(self, directory: str) -> None:
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def check_writable(self) -> None:
        """Raise :class:`QueueWriteError` unless this process can write every state directory."""
        for directory in self._dirs.values():
            if not os.access(directory, os.W_OK | os.X_OK):
                raise QueueWriteError(f"queue directory {directory} is not writable by this user")

    # -- writing: tmp -> new -----------------------------------------------------------

    def _write_new_file(self, path: str, content: bytes, mtime: float | None = None, lock: bool = False) -> int:
        """Create ``path`` exclusively, write and fsync ``content``; return the open fd."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.file_mode)
        except OSError as exc:
            raise QueueWriteError(f"cannot create {path}: {exc.strerror}") from exc
        try:
            if lock:
                fcntl.flock(fd, fcntl.LOCK_EX)
            if self.group_access:
                os.fchmod(fd, self.file_mode)
            view = memoryview(content)
            while view:
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, "short write")
                view = view[written:]
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            _unlink_quietly(path)
            raise QueueWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return fd

    def stage(self, envelope: Envelope, message: bytes) -> str:
        """Write a message durably into ``tmp/`` and return its new queue id."""
        content = queuefile.encode(envelope, message)
        while True:
            queue_id = new_queue_id(envelope.queued_at)
            try:
                os.close(self._write_new_file(self._file(TMP_DIR, queue_id), content))
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
                record = self._write_commit_record(queue_ids)
            except QueueWriteError as exc:
                log.warning(
                    "cannot record the commit of %d messages before publishing them (%s); publishing "
                    "them without it: a crash during the renames would leave some in %s",
                    len(queue_ids),
                    exc,
                    self._dirs[TMP_DIR],
                )
        failures: list[tuple[str, OSError]] | None = None
        try:
            failures = self._rename_into_new(queue_ids)
        finally:
            if record is not None:
                path, fd = record
                # Only a failed rename can have left a message in tmp/ (all of them, if renaming raised).
                unsure = queue_ids if failures is None else [queue_id for queue_id, _ in failures]
                if not any(os.path.lexists(self._file(TMP_DIR, queue_id)) for queue_id in unsure):
                    _unlink_quietly(path)  # done; a rename that failed is retried by cleanup()
                os.close(fd)
        return failures

    def _commit_record_path(self, first_queue_id: str) -> str:
        return os.path.join(self._dirs[TMP_DIR], COMMIT_RECORD_PREFIX + first_queue_id)

    def _write_commit_record(self, queue_ids: list[str]) -> tuple[str, int]:
        """Write the ids and an end line to ``tmp/.commit-<first id>``, durably; return it locked."""
        path = self._commit_record_path(queue_ids[0])
        content = "".join(f"{queue_id}\n" for queue_id in queue_ids) + COMMIT_RECORD_END
        fd = self._write_new_file(path, content.encode("ascii"), lock=True)
        try:
            self._sync_dir(self._dirs[TMP_DIR])
        except OSError as exc:
            os.close(fd)
            _unlink_quietly(path)
            raise QueueWriteError(f"cannot fsync {self._dirs[TMP_DIR]}: {exc.strerror or exc}") from exc
        return path, fd

    def _finish_interrupted_commits(self, now: float) -> set[str]:
        """Roll forward: publish what is left in ``tmp/`` of each commit record whose process died.

        A record is locked by its live committer, so a record this process can lock is an
        orphan. A complete one (ending with its end line) was written before any rename:
        its transaction committed, and every id it names still in ``tmp/`` is published.
        An incomplete one was cut short before any rename; it is removed once it is old.
        Returns the ids named by the records of live committers (not to be cleaned up).
        """
        in_use: set[str] = set()
        for entry in _scan(self._dirs[TMP_DIR], dotfiles=True):
            if not entry.name.startswith(COMMIT_RECORD_PREFIX):
                continue
            try:
                fd = _open_locked(entry.path)
            except OSError as exc:
                log.error("commit record %s: cannot open it: %s", entry.path, exc.strerror)
                continue
            if fd is None:  # its committer is renaming right now: leave its messages alone
                in_use.update(_read_ids(entry.path))
                continue
            try:
                lines = _read_all(fd).decode("ascii", "replace").split("\n")
                if lines[-1] != COMMIT_RECORD_END:
                    if now - os.fstat(fd).st_mtime > INCOMPLETE_RECORD_MAX_AGE:
                        os.unlink(entry.path)  # its process died before its transaction's commit was recorded
                    continue
                finished = []
                for queue_id in lines[:-1]:
                    if not is_queue_id(queue_id):
                        continue
                    try:
                        os.rename(self._file(TMP_DIR, queue_id), self._file(MessageState.QUEUED, queue_id))
                    except FileNotFoundError:
                        continue  # published before the process died
                    finished.append(queue_id)
                self._sync_dir(self._state_dir(MessageState.QUEUED))
                os.unlink(entry.path)
                if finished:
                    log.warning(
                        "finished publishing %d of the %d messages of a transaction whose process died while "
                        "committing it (commit record %s): queue ids %s",
                        len(finished),
                        len(lines) - 1,
                        entry.path,
                        ", ".join(finished),
                    )
            except OSError as exc:
                log.error("commit record %s: cannot finish its publication: %s; retried next time", entry.path, exc)
            finally:
                os.close(fd)
        return in_use

    def _rename_into_new(self, queue_ids: list[str]) -> list[tuple[str, OSError]]:
        """Rename from ``tmp/`` into ``new/``, then fsync ``new/``; return the failures."""
        failures: list[tuple[str, OSError]] = []
        for queue_id in queue_ids:
            try:
                os.rename(self._file(TMP_DIR, queue_id), self._file(MessageState.QUEUED, queue_id))
            except OSError as exc:
                failures.append((queue_id, exc))
        try:
            self._sync_dir(self._state_dir(MessageState.QUEUED))
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
        problems = []
        new_dir = self._state_dir(MessageState.QUEUED)
        record = self._commit_record_path(queue_ids[0]) if queue_ids else ""
        for queue_id, exc in failures:
            staged = self._file(TMP_DIR, queue_id)
            if os.path.lexists(staged) and os.path.lexists(record):
                problem = (
                    f"could not be published: {exc}; the message is still in {staged}, and the commit "
                    f"record {record} names it: the next mq-send run retries the rename"
                )
            elif os.path.lexists(staged):
                problem = (
                    f"could not be published: {exc}; the message is still in {staged}: "
                    f"move it into {new_dir}/ by hand to send it"
                )
            else:  # renamed, but the fsync of new/ failed: a crash now may lose it
                published = self._file(MessageState.QUEUED, queue_id)
                problem = (
                    f"was published as {published}, but the fsync of {new_dir} failed: {exc}; "
                    "the message may be lost if the system crashes before it is sent"
                )
            problems.append((queue_id, problem))
        return problems

    def discard(self, queue_ids: list[str]) -> None:
        """Remove uncommitted messages from ``tmp/`` (the abort); missing files are fine."""
        for queue_id in queue_ids:
            _unlink_quietly(self._file(TMP_DIR, queue_id))

    def enqueue(self, envelope: Envelope, message: bytes) -> str:
        """Write a message and publish it at once (no transaction); return its queue id."""
        queue_id = self.stage(envelope, message)
        for _queue_id, exc in self._publish([queue_id]):
            # Not durably queued: withdraw it, so that a caller who retries sends it once.
            self.discard([queue_id])
            _unlink_quietly(self._file(MessageState.QUEUED, queue_id))
            raise QueueWriteError(f"cannot publish queue id {queue_id}: {exc.strerror or exc}") from exc
        return queue_id

    def cleanup(self, max_age: float, now: float | None = None) -> list[str]:
        """Remove files older than ``max_age`` seconds from ``tmp/``, and stale ``.*.rewrite`` files.

        These are the leftovers of processes killed mid-request or mid-rewrite; nothing
        else ever removes mail. First, the publication of a transaction whose process died
        while committing it is finished (its commit record names the messages). Returns the
        names removed.
        """
        now = time.time() if now is None else now
        being_published = self._finish_interrupted_commits(now)
        removed = []
        for directory in self._dirs.values():
            in_tmp = directory == self._dirs[TMP_DIR]
            # Removals happen inside the directory opened here, never through a symbolic link
            # that replaced it meanwhile (O_NOFOLLOW, then names relative to that descriptor).
            try:
                dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                log.error("cannot clean up %s: %s; it is not a real directory of the queue", directory, exc.strerror)
                continue
            try:
                with os.scandir(dir_fd) as entries:
                    names = [entry.name for entry in entries]
                for name in names:
                    if not in_tmp and not (name.startswith(".") and name.endswith(".rewrite")):
                        continue
                    if in_tmp and (name.startswith(COMMIT_RECORD_PREFIX) or name in being_published):
                        continue  # rolled forward above, or still in use
                    try:
                        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                        if stat.S_ISREG(info.st_mode) and now - info.st_mtime > max_age:
                            os.unlink(name, dir_fd=dir_fd)
                            removed.append(name)
                            log.info("removed stale file %s (older than %.0fs)", os.path.join(directory, name), max_age)
                    except FileNotFoundError:
                        continue
            finally:
                os.close(dir_fd)
        return removed

    # -- the sender's side ---------------------------------------------------------------

    def recover_stale_claims(self) -> list[str]:
        """Move messages whose sending process died from ``sending/`` back to ``new/``.

        A live sender holds an ``flock`` on its claimed file; the lock dies with the
        process, so an unlocked file in ``sending/`` is an orphan.
        """
        recovered = []
        for entry in _scan(self._state_dir(MessageState.SENDING)):
            try:
                fd = _open_locked(entry.path)
            except OSError as exc:
                log.error("queue id %s: cannot open %s: %s", entry.name, entry.path, exc.strerror)
                continue
            if fd is None:
                continue
            try:
                if _same_file(fd, entry.path):
                    os.rename(entry.path, self._file(MessageState.QUEUED, entry.name))
                    recovered.append(entry.name)
                    log.warning("queue id %s: its sender died mid-delivery; back in the queue", entry.name)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        if recovered:
            self._sync_dir(self._state_dir(MessageState.QUEUED))
            self._sync_dir(self._state_dir(MessageState.SENDING))
        return recovered

    def due(self, now: float | None = None, flush: bool = False) -> list[str]:
        """Queue ids of messages due for delivery, oldest first: all of ``new/`` and the
        deferred ones whose retry time has come (all deferred ones with ``flush``)."""
        now = time.time() if now is None else now
        ids = []
        for entry in _scan(self._state_dir(MessageState.QUEUED)):
            if is_queue_id(entry.name):
                ids.append(entry.name)
            else:
                self._report_stray(entry.path)
        retry_times = self._deferred.retry_times()
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
        return min(self._deferred.retry_times().values(), default=None)

    def claim(self, queue_id: str) -> Claim | None:
        """Claim a due message: lock it, move it to ``sending/`` and read it.

        Returns None when another sender got it first. Raises
        :class:`CorruptMessageError` (after moving the file to ``corrupt/``) when the
        file cannot be decoded.
        """
        target = self._file(MessageState.SENDING, queue_id)
        for state in (MessageState.QUEUED, MessageState.DEFERRED):
            source = self._file(state, queue_id)
            try:
                fd = _open_locked(source)
            except OSError as exc:  # EMFILE, EACCES...: a fault of this process or host, not of the message
                raise QueueUnavailableError(
                    f"queue id {queue_id}: cannot open {source}: {exc.strerror}; it stays where it is"
                ) from exc
            if fd is None:
                continue
            try:
                os.rename(source, target)
            except FileNotFoundError:
                os.close(fd)  # another sender moved it between our open and rename
                continue
            try:
                envelope, message = queuefile.decode(_read_all(fd))
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
                    claim._reserved_path = self._scratch_path(MessageState.SENDING, queue_id)
                except OSError as exc:
                    self._give_back(queue_id, state, fd)
                    raise QueueFullError(
                        f"queue id {queue_id} (Message-ID {envelope.message_id}): not sent now: no room to "
                        f"record the outcome of a delivery to several recipients ({exc.strerror or exc} in "
                        f"{self._state_dir(MessageState.SENDING)}); it stays queued, untouched"
                    ) from exc
            return claim
        return None

    def _give_back(self, queue_id: str, state: MessageState, fd: int) -> None:
        """Undo a claim before anything was tried: back to ``state``, unlocked."""
        try:
            os.rename(self._file(MessageState.SENDING, queue_id), self._file(state, queue_id))
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
        scratch = self._scratch_path(MessageState.SENDING, queue_id)
        _unlink_quietly(scratch)
        fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, self.file_mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.posix_fallocate(fd, 0, needed)
        except OSError:
            os.close(fd)
            _unlink_quietly(scratch)
            raise
        return fd

    def _scratch_path(self, state: MessageState, queue_id: str) -> str:
        return os.path.join(self._state_dir(state), f".{queue_id}.rewrite")

    def _rewrite(self, claim: Claim, state: MessageState, mtime: float | None = None) -> None:
        """Replace the claimed file in ``state`` with one holding the claim's new envelope.

        The replacement is locked before it is published, so a sweeper never mistakes it
        for an orphan.
        """
        path = self._file(state, claim.queue_id)
        scratch = self._scratch_path(state, claim.queue_id)
        content = queuefile.encode(claim.envelope, claim.message)
        file_claim = _file_claim(claim)
        if file_claim._reserved is not None and state == MessageState.SENDING:
            fd, file_claim._reserved = file_claim._reserved, None
            file_claim._fds.append(fd)
            try:
                _write_over(fd, content)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                raise QueueWriteError(f"cannot write {scratch}: {exc.strerror or exc}") from exc
        else:
            _unlink_quietly(scratch)
            fd = self._write_new_file(scratch, content, mtime, lock=True)
            file_claim._fds.append(fd)
        os.rename(scratch, path)

    def _move(self, queue_id: str, source: MessageState, target: MessageState) -> None:
        source_path = self._file(source, queue_id)
        target_path = self._file(target, queue_id)
        os.rename(source_path, target_path)
        self._sync_dir(self._state_dir(target))
        self._sync_dir(self._state_dir(source))

    def finish_delivered(self, claim: Claim) -> None:
        """The message reached every recipient: remove it, durably, at once."""
        os.unlink(self._file(MessageState.SENDING, claim.queue_id))
        self._sync_dir(self._state_dir(MessageState.SENDING))
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
        """
        for name in [MessageState(state)] if state else STATES:
            found = []
            for entry in _scan(self._state_dir(name)):
                if not is_queue_id(entry.name):
                    continue
                try:
                    info = entry.stat()
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
            directory = self._state_dir(name)
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        try:
                            regular = entry.is_file(follow_symlinks=False)
                        except OSError:
                            regular = False
                        if not (regular and is_queue_id(entry.name)):
                            found.append(entry.path)
            except FileNotFoundError:
                continue
        return sorted(found)

    def find(self, queue_id: str) -> Entry:
        """Return the entry for ``queue_id``, or raise :class:`UnknownQueueIdError`."""
        if not isinstance(queue_id, str) or not is_queue_id(queue_id):
            raise UnknownQueueIdError(
                f"{queue_id!r} is not a queue id (expected e.g. 20261128T151136123456Z-9f3a2b1c0d)"
            )
        for state in STATES:
            try:
                info = os.stat(self._file(state, queue_id), follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                return Entry(queue_id, state, info.st_mtime, info.st_size, info.st_ctime)
        raise UnknownQueueIdError(f"queue id {queue_id} is not in the queue at {self.path}")

    def read(self, entry: Entry) -> tuple[Envelope, bytes]:
        """Return the envelope and message of a listed entry (raises ``CorruptMessageError``)."""
        with open(self._file(entry.state, entry.queue_id), "rb") as handle:
            return queuefile.decode(handle.read())

    def read_raw(self, entry: Entry) -> bytes:
        """Return a listed entry's file content as it is on disk."""
        with open(self._file(entry.state, entry.queue_id), "rb") as handle:
            return handle.read()

    def lock(self, entry: Entry) -> Claim | None:
        """Lock a message where it lies (for the operator tool); None when a sender holds it."""
        try:
            fd = _open_locked(self._file(entry.state, entry.queue_id))
        except OSError as exc:
            raise QueueWriteError(f"queue id {entry.queue_id}: cannot open it: {exc.strerror}") from exc
        if fd is None:
            return None
        try:
            envelope, message = queuefile.decode(_read_all(fd)) if entry.state != MessageState.CORRUPT else (None, b"")
        except CorruptMessageError:
            envelope, message = None, b""
        return FileClaim(entry.queue_id, envelope, message, [fd])  # type: ignore[arg-type] # None: see Claim

    def move(self, claim: Claim, source: MessageState, target: MessageState, envelope_changed: bool = False) -> None:
        """Move a locked message between states on an operator's request."""
        if envelope_changed:
            self._rewrite(claim, source)
        self._move(claim.queue_id, source, target)
        claim.release()

    def remove(self, claim: Claim, state: MessageState) -> None:
        """Remove a locked message for good on an operator's request."""
        os.unlink(self._file(state, claim.queue_id))
        self._sync_dir(self._state_dir(state))
        claim.release()

    # -- the daemon's side -------------------------------------------------------------

    def watch(self, wake_fd: int, poll_interval: float) -> DirectoryWatcher:
        """Watch ``new/`` for committed mail (inotify; polling where it is missing)."""
        return DirectoryWatcher(self._state_dir(MessageState.QUEUED), wake_fd, poll_interval)

    def daemon_lock(self) -> None:
        """Take ``.daemon.lock`` in the queue directory for the life of this process: one
        daemon per queue directory. Raise :class:`DaemonAlreadyRunning` when another holds it."""
        if self._daemon_lock_fd is not None:
            return
        path = os.path.join(self.path, ".daemon.lock")
        try:
            # Never through a symbolic link: whoever can write the queue root could point it at
            # a file of the daemon's user (or root's), which would then be truncated.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise QueueUnavailableError(
                    f"{path} is a symbolic link: refusing to use it as the daemon lock; remove it"
                ) from exc
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise QueueUnavailableError(f"{path} is not a regular file: refusing to use it as the daemon lock")
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


def _file_claim(claim: Claim) -> FileClaim:
    if not isinstance(claim, FileClaim):
        raise TypeError(f"{claim!r} is not a claim of a MessageQueue")
    return claim


def _scan(directory: str, dotfiles: bool = False) -> Iterator[os.DirEntry]:
    """Regular files in ``directory``; dot-files and anything else are ignored."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") and not dotfiles:
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):
                        yield entry
                except OSError:
                    continue
    except FileNotFoundError:
        return


def _write_over(fd: int, content: bytes) -> None:
    """Write ``content`` at the start of the open file ``fd`` and cut the file there."""
    view = memoryview(content)
    offset = 0
    while offset < len(content):
        written = os.pwrite(fd, view[offset:], offset)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        offset += written
    os.ftruncate(fd, len(content))


def _read_ids(record_path: str) -> list[str]:
    """The queue ids a commit record names (none if it vanished)."""
    try:
        with open(record_path, "rb") as handle:
            return [line for line in handle.read().decode("ascii", "replace").split("\n") if is_queue_id(line)]
    except FileNotFoundError:
        return []


def _open_locked(path: str) -> int | None:
    """Open ``path`` and take its exclusive lock without waiting; None if missing or held.

    Other errors (a file this user cannot read) raise ``OSError``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not _same_file(fd, path):
        os.close(fd)  # replaced or moved while we were locking it
        return None
    return fd


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and stat.S_ISREG(b.st_mode)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, max(size - offset, 65536), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
