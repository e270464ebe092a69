"""The directory queue's wake-up for the daemon: inotify on ``new/``, polling where it is missing.

``MessageQueue.watch()`` returns a :class:`DirectoryWatcher`; the daemon only sees the
``IMailWatcher`` interface, so a database queue can wake it its own way (LISTEN/NOTIFY).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select

from zope.interface import implementer

from .interfaces import IMailWatcher

log = logging.getLogger("mq_transaction.daemon")

# Hand-written on purpose: the standard library has no inotify binding, and these few ctypes
# calls spare a dependency. The measured reason for inotify over polling (bench/hand_written.py,
# 2 shared cores, load ~10): a rename into new/ wakes the watcher in 0.2 ms (median of 200),
# where polling at the daemon's 1 s poll_interval wakes 500-560 ms later (median of 20, max 971 ms),
# and polling often enough to come close costs CPU on an idle queue at every tick (listing an
# empty new/ every 1 ms: 1.7 % of a core, before any daemon pass). tests/test_hand_written_parts.py
# checks the binding against the kernel's own events (a committed message is IN_MOVED_TO).
_IN_CREATE, _IN_MOVED_TO = 0x100, 0x80  # <sys/inotify.h>
_IN_ONLYDIR, _IN_DONT_FOLLOW = 0x01000000, 0x02000000


@implementer(IMailWatcher)
class DirectoryWatcher:
    """Waits for files to appear in a directory: inotify on Linux, else plain timeouts.

    With ``dir_fd`` (the directory, already open) the watch is put on that very directory,
    through ``/proc/self/fd``, whatever its name leads to now; without ``/proc``, on
    ``directory`` only if it is a real directory (a symbolic link is not followed).
    """

    def __init__(self, directory: str, wake_fd: int, poll_interval: float, *, dir_fd: int | None = None) -> None:
        self.wake_fd = wake_fd
        self.poll_interval = poll_interval
        self.fd: int | None = None
        self._libc: ctypes.CDLL | None = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1 failed")
            self._libc, self.fd = libc, fd
            self.follow(directory, dir_fd)
        except (OSError, AttributeError) as exc:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            log.info("inotify is not available (%s); polling %s instead", exc, directory)

    def follow(self, directory: str, dir_fd: int | None = None) -> None:
        """Watch ``directory`` too (the queue calls it when its ``new/`` was made again);
        raise ``OSError`` when the watch cannot be added. Polling needs nothing."""
        if self.fd is None or self._libc is None:
            return
        target, flags = directory, _IN_CREATE | _IN_MOVED_TO | _IN_ONLYDIR | _IN_DONT_FOLLOW
        if dir_fd is not None and os.path.isdir(f"/proc/self/fd/{dir_fd}"):
            target, flags = f"/proc/self/fd/{dir_fd}", _IN_CREATE | _IN_MOVED_TO | _IN_ONLYDIR
        if self._libc.inotify_add_watch(self.fd, os.fsencode(target), flags) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed on {directory}")

    @property
    def mode(self) -> str:
        """``inotify`` or ``polling``."""
        return "inotify" if self.fd is not None else "polling"

    def wait(self, timeout: float) -> bool:
        """Return when a file appears, the wake pipe is written, or ``timeout`` passes;
        always False (a directory is never lost and found again)."""
        fds = [self.wake_fd] + ([self.fd] if self.fd is not None else [])
        if self.fd is None:
            timeout = min(timeout, self.poll_interval)
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            return False
        for fd in ready:
            drain(fd)
        return False

    def close(self) -> None:
        """Stop watching."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def drain(fd: int) -> None:
    """Read a non-blocking descriptor (a wake pipe, an inotify descriptor) until it is empty."""
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return
            raise
