"""The retry times of a queue's ``deferred/`` directory, read again only when the directory changed."""

from __future__ import annotations

import os
import threading
import time

from .queue_directory import scan
from .queue_ids import is_queue_id


class RetryTimes:
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
                for entry in scan(dir_fd):
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
