"""The opened directories of a queue: its root and state directories, held open, and every file
operation made relative to them.

The queue root and each state directory are opened once, without following symbolic
links; a state directory must be a real directory owned by the root's owner or by this
process's user. Every operation on a file is then made by name relative to those open
directories (``dir_fd``): a directory swapped for a link after the queue was opened is
never followed, only reported (:meth:`QueueDirectory.layout_problems`), or opened again
when it was replaced by a real one (:meth:`QueueDirectory.reopen_replaced`). Paths are
built only to name things in messages to people.

Which file moves where, and when, is the business of :mod:`mq_transaction.queue` (and of
:mod:`mq_transaction.commit_records`); this module knows directories and files, not messages.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator

from .errors import QueueNotFoundError, QueueUnavailableError, QueueWriteError
from .states import STATE_DIRS, TMP_DIR, MessageState

# The queue's logger: operators filter on one name for everything the directory queue reports.
log = logging.getLogger("mq_transaction.queue")

#: Where a file lies: a state, or ``TMP_DIR`` while its transaction has not committed.
Place = MessageState | str

#: The subdirectories of a queue: ``tmp/`` and one per state.
DIR_NAMES: tuple[str, ...] = (TMP_DIR, *STATE_DIRS.values())

# Every open in a queue refuses a symbolic link as its last component (O_NOFOLLOW; the
# components before it are directories this process opened itself). Files are opened
# non-blocking, so a FIFO slipped in under a message's name cannot hang a reader.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class QueueDirectory:
    """A queue's root and state directories, opened once; files reached only through them.

    ``create``, ``dir_mode``, ``file_mode``, ``group_access`` and ``fsync`` are the
    queue's (see :class:`~mq_transaction.queue.MessageQueue`). The descriptors stay open
    until :meth:`close` or until this object is garbage collected.
    """

    def __init__(
        self, path: str, *, create: bool, dir_mode: int, file_mode: int, group_access: bool, fsync: bool
    ) -> None:
        self.path = path
        self.fsync = fsync
        self.group_access = group_access
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        #: Paths of the subdirectories, for messages to people only: no file is reached through them.
        self.dirs = {name: os.path.join(self.path, name) for name in DIR_NAMES}
        self._dir_of: dict[Place, str] = {state: directory for state, directory in STATE_DIRS.items()}
        self._dir_of[TMP_DIR] = TMP_DIR
        #: The open descriptors: the root under "", each subdirectory under its name.
        self._open: dict[str, int] = {}
        #: (st_dev, st_ino) of each open subdirectory, to tell whether its name still leads to it.
        self._identity: dict[str, tuple[int, int]] = {}
        #: Descriptors of directories replaced while this queue was open: kept open until
        #: close(), since another thread may still be using one (a closed number gets reused).
        self._retired: list[int] = []
        self._finalizer = weakref.finalize(self, _close_all, self._open, self._retired)
        self._layout_lock = threading.Lock()
        try:
            self._open_root(create)
            for name in DIR_NAMES:
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
            self._open[""] = root = os.open(self.path, DIR_FLAGS)
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
        directory = self.dirs[name]
        made = False
        try:
            os.mkdir(name, self.dir_mode, dir_fd=root)
            made = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise QueueWriteError(f"cannot create queue directory {directory}: {exc.strerror}") from exc
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=root)
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
        """Close every descriptor held (idempotent); nothing can be reached afterwards."""
        self._finalizer()

    def hold(self, name: str, fd: int) -> None:
        """Keep the open file ``fd`` (such as the daemon lock) until :meth:`close`."""
        self._open[name] = fd

    # -- the open directories ------------------------------------------------------------

    def fd(self, place: Place) -> int:
        """The open directory of ``place`` (a state, or ``TMP_DIR``)."""
        try:
            return self._open[self._dir_of[place]]
        except KeyError:
            if not self._open:
                raise QueueUnavailableError(f"the queue at {self.path} was closed") from None
            raise

    def fd_named(self, name: str) -> int:
        """The open subdirectory ``name`` (one of :data:`DIR_NAMES`)."""
        return self._open[name]

    def root(self) -> int:
        """The open queue root."""
        try:
            return self._open[""]
        except KeyError:
            raise QueueUnavailableError(f"the queue at {self.path} was closed") from None

    def state_dir(self, state: MessageState) -> str:
        """The path of a state's directory, to name it to people."""
        return self.dirs[STATE_DIRS[state]]

    def file(self, place: Place, name: str) -> str:
        """The path of a file, to name it to people."""
        return os.path.join(self.dirs[self._dir_of[place]], name)

    # -- file operations relative to the open directories -------------------------------

    def sync_dir(self, place: Place) -> None:
        """fsync the directory of ``place`` (unless the queue skips fsync)."""
        if self.fsync:
            os.fsync(self.fd(place))

    def rename(self, name: str, source: Place, target: Place, new_name: str | None = None) -> None:
        """Rename ``name`` in ``source`` to ``new_name`` (default: the same) in ``target``."""
        os.rename(name, new_name or name, src_dir_fd=self.fd(source), dst_dir_fd=self.fd(target))

    def exists(self, place: Place, name: str) -> bool:
        """True when something (a link included, never followed) is at ``name`` in ``place``."""
        try:
            os.stat(name, dir_fd=self.fd(place), follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def exists_quietly(self, place: Place, name: str) -> bool:
        """:meth:`exists`, False when it cannot be told."""
        try:
            return self.exists(place, name)
        except OSError:
            return False

    def unlink_quietly(self, place: Place, name: str) -> None:
        """Remove ``name`` from ``place``; a missing file is fine."""
        try:
            os.unlink(name, dir_fd=self.fd(place))
        except FileNotFoundError:
            pass

    def write_new_file(
        self, place: Place, name: str, content: bytes, mtime: float | None = None, lock: bool = False
    ) -> int:
        """Create ``name`` in ``place`` exclusively, write and fsync ``content``; return the open fd."""
        try:
            fd = os.open(name, CREATE_FLAGS, self.file_mode, dir_fd=self.fd(place))
        except OSError as exc:
            raise QueueWriteError(f"cannot create {self.file(place, name)}: {exc.strerror}") from exc
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
            self.unlink_quietly(place, name)
            raise QueueWriteError(f"cannot write {self.file(place, name)}: {exc.strerror or exc}") from exc
        return fd

    def read_regular(self, place: Place, name: str) -> bytes:
        """The content of the regular file ``name`` in ``place`` (``OSError`` for anything else)."""
        fd = os.open(name, READ_FLAGS, dir_fd=self.fd(place))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, f"{self.file(place, name)} is not a regular file")
            return read_all(fd)
        finally:
            os.close(fd)

    # -- the layout: each name still leads to the directory opened ----------------------

    def layout_problems(self, places: Iterable[Place] | None = None) -> list[str]:
        """What is wrong with the queue's directories now, one sentence each (none: all well).

        Each name (``new``, ``tmp``...) must still lead to the directory this queue opened:
        one replaced by a symbolic link, removed, or swapped for another directory since
        then is reported, and never followed.
        """
        names = DIR_NAMES if places is None else [self._dir_of[place] for place in places]
        return [problem for name in names if (problem := self._replaced(name))]

    def _replaced(self, name: str) -> str:
        """What became of subdirectory ``name`` since the queue opened it; empty if nothing."""
        try:
            info = os.stat(name, dir_fd=self.root(), follow_symlinks=False)
            if (info.st_dev, info.st_ino) == self._identity[name]:
                return ""
        except FileNotFoundError:
            pass
        return (
            f"queue directory {self.dirs[name]} {self._what_is(name)} since this process opened the queue: "
            "refusing to follow it (nothing is written, moved or removed through it)"
        )

    def check_layout(
        self, places: Iterable[Place] | None = None, *, error: type[OSError] = QueueUnavailableError
    ) -> None:
        """Raise ``error`` naming each directory of ``places`` (default: all) whose name no
        longer leads to the directory this queue opened (see :meth:`layout_problems`)."""
        problems = self.layout_problems(places)
        if problems:
            raise error("; ".join(problems) + ". Restore the real directory, then restart this process")

    def reopen_replaced(self, reopened: Callable[[str, int], None]) -> None:
        """Open again, with the checks of the first open, each directory that was replaced
        by a real one (an operator recreated it); raise for a link or a foreign owner.

        ``reopened(name, fd)`` is called for each, still under the lock that serialises
        reopening. Only for the start of a sender's pass, when this process holds no claim
        inside a directory that may change.
        """
        with self._layout_lock:
            for name in DIR_NAMES:
                problem = self._replaced(name)
                if not problem:
                    continue
                try:
                    now = os.stat(name, dir_fd=self.root(), follow_symlinks=False)
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
                    self.dirs[name],
                )
                reopened(name, fd)


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


def listing(dir_fd: int) -> Iterator[os.DirEntry]:
    """Every entry of the open directory ``dir_fd``; stat an entry before the next one.

    The listing reads a descriptor of its own (``.`` opened relative to ``dir_fd``): a
    directory offset is shared by every duplicate of a descriptor, so two listings through
    the queue's descriptor (two threads, or a parent and its forked child) would disturb
    each other.
    """
    fd = os.open(".", DIR_FLAGS, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as entries:
            yield from entries
    finally:
        os.close(fd)


def scan(dir_fd: int, dotfiles: bool = False) -> Iterator[os.DirEntry]:
    """Regular files in the open directory ``dir_fd``; dot-files and anything else are ignored."""
    for entry in listing(dir_fd):
        if entry.name.startswith(".") and not dotfiles:
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                yield entry
        except OSError:
            continue


def open_locked(name: str, dir_fd: int) -> int | None:
    """Open ``name`` in the open directory ``dir_fd`` and take its exclusive lock without
    waiting; None if missing or held.

    Other errors (a file this user cannot read, a symbolic link) raise ``OSError``.
    """
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
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


def read_all(fd: int) -> bytes:
    """The whole content of the open file ``fd``, read from its start."""
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


def write_over(fd: int, content: bytes) -> None:
    """Write ``content`` at the start of the open file ``fd`` and cut the file there."""
    view = memoryview(content)
    offset = 0
    while offset < len(content):
        written = os.pwrite(fd, view[offset:], offset)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        offset += written
    os.ftruncate(fd, len(content))
