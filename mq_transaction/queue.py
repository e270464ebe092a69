"""The queue directory: its layout, and every transition of a message between states.

This is the only module that touches files inside a queue. Each state is a directory,
each transition one atomic ``rename`` (or ``unlink``) followed by an ``fsync`` of the
directory. See ``docs/queue.md`` for the table this module mirrors name for name.

The queue root and each state directory are opened once, without following symbolic
links, and every operation on a message file is made by name relative to those open
directories (``dir_fd``): a directory swapped for a link after the queue was opened is
never followed. Paths are built only to name things in messages to people.
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
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from zope.interface import implementer

from . import queuefile
from .errors import (
    CorruptMessageError,
    DaemonAlreadyRunning,
    MailQueueError,
    QueueFullError,
    QueueNotFoundError,
    QueueUnavailableError,
    QueueWriteError,
    UnknownQueueIdError,
)
from .interfaces import IMailQueue
from .queuefile import Envelope
from .records import Claim, Entry, claim_each
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

#: The daemon's lock file, in the queue root.
DAEMON_LOCK = ".daemon.lock"

#: Where a message lies: a state, or ``TMP_DIR`` while its transaction has not committed.
_Place = MessageState | str

#: The subdirectories of a queue: ``tmp/`` and one per state.
_DIR_NAMES: tuple[str, ...] = (TMP_DIR, *STATE_DIRS.values())

# Every open in a queue refuses a symbolic link as its last component (O_NOFOLLOW; the
# components before it are directories this process opened itself). Files are opened
# non-blocking, so a FIFO slipped in under a message's name cannot hang a reader.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

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


class _RetryTimes:
    """The retry times of ``deferred/`` (each file's mtime), read again only when it changed.

    The daemon asks for due messages at every wake-up; with 100,000 deferred messages a
    ``stat`` of each costs most of a second. Every change to the directory's entries (a
    message deferred, claimed, moved by the operator) changes the directory's own mtime,
    so one ``fstat`` of the open directory tells whether the cached times still hold. A stamp
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

    def retry_times(self, dir_fd: int) -> dict[str, float]:
        """Queue id -> retry time of every deferred message in the open directory ``dir_fd``
        (do not modify it)."""
        with self._lock:
            info = os.fstat(dir_fd)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns)
            if stamp != self._stamp:
                times = {}
                strays = []
                for entry in _scan(dir_fd):
                    if not is_queue_id(entry.name):
                        strays.append(os.path.join(self.directory, entry.name))
                        continue
                    try:
                        times[entry.name] = entry.stat(follow_symlinks=False).st_mtime
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
        #: Paths of the subdirectories, for messages to people only: no file is reached through them.
        self._dirs = {name: os.path.join(self.path, name) for name in _DIR_NAMES}
        self._dir_of: dict[_Place, str] = {state: directory for state, directory in STATE_DIRS.items()}
        self._dir_of[TMP_DIR] = TMP_DIR
        #: The open descriptors: the root under "", each subdirectory under its name.
        self._open: dict[str, int] = {}
        #: (st_dev, st_ino) of each open subdirectory, to tell whether its name still leads to it.
        self._identity: dict[str, tuple[int, int]] = {}
        #: Descriptors of directories replaced while this queue was open: kept open until
        #: close(), since another thread may still be using one (a closed number gets reused).
        self._retired: list[int] = []
        self._daemon_lock_fd: int | None = None
        self._finalizer = weakref.finalize(self, _close_all, self._open, self._retired)
        self._deferred = _RetryTimes(self._dirs[STATE_DIRS[MessageState.DEFERRED]])
        self._strays_reported: set[str] = set()
        self._layout_lock = threading.Lock()
        #: The daemon's watchers of new/, moved to a new/ made again (see _reopen_replaced).
        self._watchers: weakref.WeakSet[DirectoryWatcher] = weakref.WeakSet()
        try:
            self._open_root(create)
            for name in _DIR_NAMES:
                self._open[name] = fd = self._open_subdirectory(name)
                info = os.fstat(fd)
                self._identity[name] = (info.st_dev, info.st_ino)
        except BaseException:
            self.close()
            raise

    def _open_root(self, create: bool) -> None:
        made = False
        if create:
            try:
                os.mkdir(self.path, self.dir_mode)
                made = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise QueueWriteError(f"cannot create queue directory {self.path}: {exc.strerror}") from exc
        try:
            self._open[""] = root = os.open(self.path, _DIR_FLAGS)
        except OSError as exc:
            link = _link_target(self.path)
            if link is not None:
                raise QueueWriteError(
                    f"queue directory {self.path} is a symbolic link (to {link}): refusing to follow it; "
                    f"give the real directory ({os.path.realpath(self.path)}) as the queue directory"
                ) from exc
            if exc.errno in (errno.ENOENT, errno.ENOTDIR) and not create:
                raise QueueNotFoundError(f"{self.path} does not exist or is not a directory") from exc
            if exc.errno == errno.ENOTDIR:
                raise QueueWriteError(f"queue path {self.path} exists and is not a directory") from exc
            raise QueueWriteError(f"cannot open queue directory {self.path}: {exc.strerror}") from exc
        if made:
            os.fchmod(root, self.dir_mode)  # the umask may have taken bits away

    def _open_subdirectory(self, name: str) -> int:
        """Open ``name`` in the root (made when missing), refusing a link or a foreign owner.

        In the two-user setup the web app owns the queue root and could replace ``tmp/`` by
        a link to a directory of the sender's user (or root's), whose old files clean-up
        would then delete. A state directory must be a real directory owned by the owner of
        the queue root or by this process's user.
        """
        root = self._open[""]
        directory = self._dirs[name]
        made = False
        try:
            os.mkdir(name, self.dir_mode, dir_fd=root)
            made = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise QueueWriteError(f"cannot create queue directory {directory}: {exc.strerror}") from exc
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=root)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise QueueWriteError(
                    f"queue directory {directory} {self._what_is(name)}: refusing to use it; "
                    "replace it by a real directory (see docs/queue.md)"
                ) from exc
            raise QueueWriteError(f"cannot open queue directory {directory}: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            root_owner = os.fstat(root).st_uid
            if info.st_uid not in (root_owner, os.geteuid()):
                raise QueueWriteError(
                    f"queue directory {directory} belongs to user id {info.st_uid}, not to the owner of "
                    f"{self.path} (user id {root_owner}) nor to this user (user id {os.geteuid()}): refusing it"
                )
            if made:
                os.fchmod(fd, self.dir_mode)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _what_is(self, name: str) -> str:
        """What stands at ``name`` in the root now, for an error message."""
        try:
            info = os.stat(name, dir_fd=self._open[""], follow_symlinks=False)
        except FileNotFoundError:
            return "is gone"
        except (OSError, KeyError) as exc:
            return f"cannot be examined ({exc})"
        if stat.S_ISLNK(info.st_mode):
            try:
                return f"is a symbolic link (to {os.readlink(name, dir_fd=self._open[''])})"
            except OSError:
                return "is a symbolic link"
        if not stat.S_ISDIR(info.st_mode):
            return "is not a directory"
        return "was replaced by another directory"

    def close(self) -> None:
        """Close the queue's directories (and drop the daemon lock). Idempotent; the queue
        cannot be used afterwards. Claims still held keep their own locks."""
        self._daemon_lock_fd = None
        self._finalizer()

    def __enter__(self) -> MessageQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MessageQueue({self.path!r})"

    # -- the open directories (private: no other module reaches into the queue) ----------

    def _fd(self, place: _Place) -> int:
        """The open directory of ``place`` (a state, or ``TMP_DIR``)."""
        try:
            return self._open[self._dir_of[place]]
        except KeyError:
            if not self._open:
                raise QueueUnavailableError(f"the queue at {self.path} was closed") from None
            raise

    def _root(self) -> int:
        try:
            return self._open[""]
        except KeyError:
            raise QueueUnavailableError(f"the queue at {self.path} was closed") from None

    def _state_dir(self, state: MessageState) -> str:
        return self._dirs[STATE_DIRS[state]]

    def _file(self, place: _Place, queue_id: str) -> str:
        """The path of a file, to name it to people."""
        return os.path.join(self._dirs[self._dir_of[place]], queue_id)

    def _sync_dir(self, place: _Place) -> None:
        if self.fsync:
            os.fsync(self._fd(place))

    def _rename(self, name: str, source: _Place, target: _Place, new_name: str | None = None) -> None:
        os.rename(name, new_name or name, src_dir_fd=self._fd(source), dst_dir_fd=self._fd(target))

    def _exists(self, place: _Place, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self._fd(place), follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _unlink_quietly(self, place: _Place, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self._fd(place))
        except FileNotFoundError:
            pass

    def layout_problems(self, places: Iterable[_Place] | None = None) -> list[str]:
        """What is wrong with the queue's directories now, one sentence each (none: all well).

        Each name (``new``, ``tmp``...) must still lead to the directory this queue opened:
        one replaced by a symbolic link, removed, or swapped for another directory since
        then is reported, and never followed.
        """
        names = _DIR_NAMES if places is None else [self._dir_of[place] for place in places]
        return [problem for name in names if (problem := self._replaced(name))]

    def _replaced(self, name: str) -> str:
        """What became of subdirectory ``name`` since the queue opened it; empty if nothing."""
        try:
            info = os.stat(name, dir_fd=self._root(), follow_symlinks=False)
            if (info.st_dev, info.st_ino) == self._identity[name]:
                return ""
        except FileNotFoundError:
            pass
        return (
            f"queue directory {self._dirs[name]} {self._what_is(name)} since this process opened the queue: "
            "refusing to follow it (nothing is written, moved or removed through it)"
        )

    def check_layout(
        self, places: Iterable[_Place] | None = None, *, error: type[OSError] = QueueUnavailableError
    ) -> None:
        """Raise ``error`` naming each directory of ``places`` (default: all) whose name no
        longer leads to the directory this queue opened (see :meth:`layout_problems`)."""
        problems = self.layout_problems(places)
        if problems:
            raise error("; ".join(problems) + ". Restore the real directory, then restart this process")

    def _reopen_replaced(self) -> None:
        """Open again, with the checks of the first open, each directory that was replaced
        by a real one (an operator recreated it); raise for a link or a foreign owner.

        Only for the start of a sender's pass (:meth:`cleanup`, :meth:`due`), when this
        process holds no claim inside a directory that may change.
        """
        with self._layout_lock:
            for name in _DIR_NAMES:
                problem = self._replaced(name)
                if not problem:
                    continue
                try:
                    now = os.stat(name, dir_fd=self._root(), follow_symlinks=False)
                except FileNotFoundError:
                    now = None  # removed: made again, as at open
                if now is not None and not stat.S_ISDIR(now.st_mode):
                    raise QueueUnavailableError(f"{problem}; put the real directory back (see docs/queue.md)")
                try:
                    fd = self._open_subdirectory(name)
                except QueueWriteError as exc:
                    raise QueueUnavailableError(f"{exc}; it was replaced since this process opened the queue") from exc
                info = os.fstat(fd)
                self._retired.append(self._open[name])
                self._open[name], self._identity[name] = fd, (info.st_dev, info.st_ino)
                log.warning(
                    "queue directory %s was replaced by another directory since this process opened the queue; "
                    "using the new one (files left in the old one are no longer part of the queue)",
                    self._dirs[name],
                )
                if name == STATE_DIRS[MessageState.QUEUED]:
                    for watcher in list(self._watchers):
                        try:
                            watcher.follow(self._dirs[name], fd)
                        except OSError as exc:
                            log.error(
                                "cannot watch %s (%s): new mail waits for the next wake-up", self._dirs[name], exc
                            )

    def check_writable(self) -> None:
        """Raise :class:`QueueWriteError` unless this process can write every state directory."""
        self.check_layout(error=QueueWriteError)
        for directory in self._dirs.values():
            if not os.access(directory, os.W_OK | os.X_OK):
                raise QueueWriteError(f"queue directory {directory} is not writable by this user")

    # -- writing: tmp -> new -----------------------------------------------------------

    def _write_new_file(
        self, place: _Place, name: str, content: bytes, mtime: float | None = None, lock: bool = False
    ) -> int:
        """Create ``name`` in ``place`` exclusively, write and fsync ``content``; return the open fd."""
        try:
            fd = os.open(name, _CREATE_FLAGS, self.file_mode, dir_fd=self._fd(place))
        except OSError as exc:
            raise QueueWriteError(f"cannot create {self._file(place, name)}: {exc.strerror}") from exc
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
            self._unlink_quietly(place, name)
            raise QueueWriteError(f"cannot write {self._file(place, name)}: {exc.strerror or exc}") from exc
        return fd

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
                os.close(self._write_new_file(TMP_DIR, queue_id, content))
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
                name, fd = record
                # Only a failed rename can have left a message in tmp/ (all of them, if renaming raised).
                unsure = queue_ids if failures is None else [queue_id for queue_id, _ in failures]
                if not any(self._exists(TMP_DIR, queue_id) for queue_id in unsure):
                    self._unlink_quietly(TMP_DIR, name)  # done; a rename that failed is retried by cleanup()
                os.close(fd)
        return failures

    def _write_commit_record(self, queue_ids: list[str]) -> tuple[str, int]:
        """Write the ids and an end line to ``tmp/.commit-<first id>``, durably; return its name, locked."""
        name = COMMIT_RECORD_PREFIX + queue_ids[0]
        content = "".join(f"{queue_id}\n" for queue_id in queue_ids) + COMMIT_RECORD_END
        fd = self._write_new_file(TMP_DIR, name, content.encode("ascii"), lock=True)
        try:
            self._sync_dir(TMP_DIR)
        except OSError as exc:
            os.close(fd)
            self._unlink_quietly(TMP_DIR, name)
            raise QueueWriteError(f"cannot fsync {self._dirs[TMP_DIR]}: {exc.strerror or exc}") from exc
        return name, fd

    def _finish_interrupted_commits(self, now: float) -> set[str]:
        """Roll forward: publish what is left in ``tmp/`` of each commit record whose process died.

        A record is locked by its live committer, so a record this process can lock is an
        orphan. A complete one (ending with its end line) was written before any rename:
        its transaction committed, and every id it names still in ``tmp/`` is published.
        An incomplete one was cut short before any rename; it is removed once it is old.
        Returns the ids named by the records of live committers (not to be cleaned up).
        """
        in_use: set[str] = set()
        tmp = self._fd(TMP_DIR)
        records = [entry.name for entry in _scan(tmp, dotfiles=True) if entry.name.startswith(COMMIT_RECORD_PREFIX)]
        for name in records:
            path = self._file(TMP_DIR, name)
            try:
                fd = _open_locked(name, tmp)
            except OSError as exc:
                log.error("commit record %s: cannot open it: %s", path, exc.strerror)
                continue
            if fd is None:  # its committer is renaming right now: leave its messages alone
                in_use.update(_read_ids(name, tmp))
                continue
            try:
                lines = _read_all(fd).decode("ascii", "replace").split("\n")
                if lines[-1] != COMMIT_RECORD_END:
                    if now - os.fstat(fd).st_mtime > INCOMPLETE_RECORD_MAX_AGE:
                        os.unlink(name, dir_fd=tmp)  # its process died before its transaction's commit was recorded
                    continue
                finished = []
                for queue_id in lines[:-1]:
                    if not is_queue_id(queue_id):
                        continue
                    try:
                        self._rename(queue_id, TMP_DIR, MessageState.QUEUED)
                    except FileNotFoundError:
                        continue  # published before the process died
                    finished.append(queue_id)
                self._sync_dir(MessageState.QUEUED)
                os.unlink(name, dir_fd=tmp)
                if finished:
                    log.warning(
                        "finished publishing %d of the %d messages of a transaction whose process died while "
                        "committing it (commit record %s): queue ids %s",
                        len(finished),
                        len(lines) - 1,
                        path,
                        ", ".join(finished),
                    )
            except OSError as exc:
                log.error("commit record %s: cannot finish its publication: %s; retried next time", path, exc)
            finally:
                os.close(fd)
        return in_use

    def _rename_into_new(self, queue_ids: list[str]) -> list[tuple[str, OSError]]:
        """Rename from ``tmp/`` into ``new/``, then fsync ``new/``; return the failures."""
        failures: list[tuple[str, OSError]] = []
        tmp, new = self._fd(TMP_DIR), self._fd(MessageState.QUEUED)
        for queue_id in queue_ids:
            try:
                os.rename(queue_id, queue_id, src_dir_fd=tmp, dst_dir_fd=new)
            except OSError as exc:
                failures.append((queue_id, exc))
        try:
            self._sync_dir(MessageState.QUEUED)
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
        new_dir = self._state_dir(MessageState.QUEUED)
        record = COMMIT_RECORD_PREFIX + queue_ids[0]
        for queue_id, exc in failures:
            staged = self._file(TMP_DIR, queue_id)
            if layout:
                problem = f"could not be published: {exc}: {layout}; look for the message as {staged}"
            elif self._exists_quietly(TMP_DIR, queue_id) and self._exists_quietly(TMP_DIR, record):
                problem = (
                    f"could not be published: {exc}; the message is still in {staged}, and the commit "
                    f"record {self._file(TMP_DIR, record)} names it: the next mq-send run retries the rename"
                )
            elif self._exists_quietly(TMP_DIR, queue_id):
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

    def _exists_quietly(self, place: _Place, name: str) -> bool:
        try:
            return self._exists(place, name)
        except OSError:
            return False

    def discard(self, queue_ids: list[str]) -> None:
        """Remove uncommitted messages from ``tmp/`` (the abort); missing files are fine."""
        for queue_id in queue_ids:
            self._unlink_quietly(TMP_DIR, queue_id)

    def enqueue(self, envelope: Envelope, message: bytes) -> str:
        """Write a message and publish it at once (no transaction); return its queue id."""
        queue_id = self.stage(envelope, message)
        for _queue_id, exc in self._publish([queue_id]):
            # Not durably queued: withdraw it, so that a caller who retries sends it once.
            self.discard([queue_id])
            self._unlink_quietly(MessageState.QUEUED, queue_id)
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
        being_published = self._finish_interrupted_commits(now)
        removed = []
        for name in _DIR_NAMES:
            in_tmp = name == TMP_DIR
            dir_fd = self._open[name]
            for entry in _scan(dir_fd, dotfiles=True):
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
                            os.path.join(self._dirs[name], entry.name),
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
        sending = self._fd(MessageState.SENDING)
        for name in [entry.name for entry in _scan(sending)]:
            try:
                fd = _open_locked(name, sending)
            except OSError as exc:
                log.error("queue id %s: cannot open %s: %s", name, self._file(MessageState.SENDING, name), exc.strerror)
                continue
            if fd is None:
                continue
            try:
                self._rename(name, MessageState.SENDING, MessageState.QUEUED)
                recovered.append(name)
                log.warning("queue id %s: its sender died mid-delivery; back in the queue", name)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        if recovered:
            self._sync_dir(MessageState.QUEUED)
            self._sync_dir(MessageState.SENDING)
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
        for entry in _scan(self._fd(MessageState.QUEUED)):
            if is_queue_id(entry.name):
                ids.append(entry.name)
            else:
                self._report_stray(self._file(MessageState.QUEUED, entry.name))
        retry_times = self._deferred.retry_times(self._fd(MessageState.DEFERRED))
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
        return min(self._deferred.retry_times(self._fd(MessageState.DEFERRED)).values(), default=None)

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
                fd = _open_locked(queue_id, self._fd(state))
            except OSError as exc:  # EMFILE, EACCES...: a fault of this process or host, not of the message
                raise QueueUnavailableError(
                    f"queue id {queue_id}: cannot open {self._file(state, queue_id)}: {exc.strerror}; "
                    "it stays where it is"
                ) from exc
            if fd is None:
                continue
            try:
                self._rename(queue_id, state, MessageState.SENDING)
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
                    claim._drop_reserved = functools.partial(
                        self._unlink_quietly, MessageState.SENDING, _scratch_name(queue_id)
                    )
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
            self._rename(queue_id, MessageState.SENDING, state)
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
        sending = self._fd(MessageState.SENDING)
        self._unlink_quietly(MessageState.SENDING, scratch)
        fd = os.open(
            scratch, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, self.file_mode, dir_fd=sending
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.posix_fallocate(fd, 0, needed)
        except OSError:
            os.close(fd)
            self._unlink_quietly(MessageState.SENDING, scratch)
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
                _write_over(fd, content)
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                raise QueueWriteError(f"cannot write {self._file(state, scratch)}: {exc.strerror or exc}") from exc
        else:
            self._unlink_quietly(state, scratch)
            fd = self._write_new_file(state, scratch, content, mtime, lock=True)
            file_claim._fds.append(fd)
        self._rename(scratch, state, state, claim.queue_id)

    def _move(self, queue_id: str, source: MessageState, target: MessageState) -> None:
        self._rename(queue_id, source, target)
        self._sync_dir(target)
        self._sync_dir(source)

    def finish_delivered(self, claim: Claim) -> None:
        """The message reached every recipient: remove it, durably, at once."""
        os.unlink(claim.queue_id, dir_fd=self._fd(MessageState.SENDING))
        self._sync_dir(MessageState.SENDING)
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
            for entry in _scan(self._fd(name)):
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
            for entry in _listing(self._fd(name)):
                if entry.name.startswith("."):
                    continue
                try:
                    regular = entry.is_file(follow_symlinks=False)
                except OSError:
                    regular = False
                if not (regular and is_queue_id(entry.name)):
                    found.append(self._file(name, entry.name))
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
                info = os.stat(queue_id, dir_fd=self._fd(state), follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                return Entry(queue_id, state, info.st_mtime, info.st_size, info.st_ctime)
        raise UnknownQueueIdError(f"queue id {queue_id} is not in the queue at {self.path}")

    def _read_file(self, entry: Entry) -> bytes:
        fd = os.open(entry.queue_id, _READ_FLAGS, dir_fd=self._fd(entry.state))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, f"{self._file(entry.state, entry.queue_id)} is not a regular file")
            return _read_all(fd)
        finally:
            os.close(fd)

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
            fd = _open_locked(entry.queue_id, self._fd(entry.state))
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
        self.check_layout([source, target])
        if envelope_changed:
            self._rewrite(claim, source)
        self._move(claim.queue_id, source, target)
        claim.release()

    def remove(self, claim: Claim, state: MessageState) -> None:
        """Remove a locked message for good on an operator's request."""
        self.check_layout([state])
        os.unlink(claim.queue_id, dir_fd=self._fd(state))
        self._sync_dir(state)
        claim.release()

    # -- the daemon's side -------------------------------------------------------------

    def watch(self, wake_fd: int, poll_interval: float) -> DirectoryWatcher:
        """Watch ``new/`` for committed mail (inotify; polling where it is missing)."""
        watcher = DirectoryWatcher(
            self._state_dir(MessageState.QUEUED), wake_fd, poll_interval, dir_fd=self._fd(MessageState.QUEUED)
        )
        self._watchers.add(watcher)
        return watcher

    def daemon_lock(self) -> None:
        """Take ``.daemon.lock`` in the queue directory for the life of this process: one
        daemon per queue directory. Raise :class:`DaemonAlreadyRunning` when another holds it."""
        if self._daemon_lock_fd is not None:
            return
        path = os.path.join(self.path, DAEMON_LOCK)
        root = self._root()
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
        self._open[DAEMON_LOCK] = fd  # closed with the queue


def _close_all(held: dict[str, int], retired: list[int]) -> None:
    """Close a queue's descriptors (its close(), or its finalizer)."""
    for fd in [*held.values(), *retired]:
        try:
            os.close(fd)
        except OSError:
            pass
    held.clear()
    retired.clear()


def _link_target(path: str) -> str | None:
    """Where ``path`` points when it is a symbolic link, else None."""
    try:
        return os.readlink(path)
    except OSError:
        return None


def _scratch_name(queue_id: str) -> str:
    return f".{queue_id}.rewrite"


def _file_claim(claim: Claim) -> FileClaim:
    if not isinstance(claim, FileClaim):
        raise TypeError(f"{claim!r} is not a claim of a MessageQueue")
    return claim


def _listing(dir_fd: int) -> Iterator[os.DirEntry]:
    """Every entry of the open directory ``dir_fd``; stat an entry before the next one.

    The listing reads a descriptor of its own (``.`` opened relative to ``dir_fd``): a
    directory offset is shared by every duplicate of a descriptor, so two listings through
    the queue's descriptor (two threads, or a parent and its forked child) would disturb
    each other.
    """
    fd = os.open(".", _DIR_FLAGS, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as entries:
            yield from entries
    finally:
        os.close(fd)


def _scan(dir_fd: int, dotfiles: bool = False) -> Iterator[os.DirEntry]:
    """Regular files in the open directory ``dir_fd``; dot-files and anything else are ignored."""
    for entry in _listing(dir_fd):
        if entry.name.startswith(".") and not dotfiles:
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                yield entry
        except OSError:
            continue


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


def _read_ids(name: str, dir_fd: int) -> list[str]:
    """The queue ids a commit record names (none if it vanished)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return []
    try:
        return [line for line in _read_all(fd).decode("ascii", "replace").split("\n") if is_queue_id(line)]
    finally:
        os.close(fd)


def _open_locked(name: str, dir_fd: int) -> int | None:
    """Open ``name`` in the open directory ``dir_fd`` and take its exclusive lock without
    waiting; None if missing or held.

    Other errors (a file this user cannot read, a symbolic link) raise ``OSError``.
    """
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not _same_file(fd, name, dir_fd):
        os.close(fd)  # replaced or moved while we were locking it
        return None
    return fd


def _same_file(fd: int, name: str, dir_fd: int) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
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
