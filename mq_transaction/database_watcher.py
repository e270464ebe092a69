"""The database queue's watcher: the daemon sleeps until mail commits (``LISTEN``/``NOTIFY``).

Every message queued in a database queue sends a ``NOTIFY`` in the same transaction, so
it fires at the commit. Notifications are not durable: the watcher polls as well, and
after a lost connection is made again it says so, for the daemon to scan at once.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from .database_sql import NOTIFY_CHANNEL
from .interfaces import IMailWatcher

log = logging.getLogger("mq_transaction.database_queue")


@implementer(IMailWatcher)
class NotificationWatcher:
    """Sleeps until a ``NOTIFY`` on :data:`NOTIFY_CHANNEL`, the wake descriptor, or a timeout.

    ``connect`` makes the listening connection: the driver's own, in autocommit, outside
    any pool; ``location`` names the database in the log (its password masked). When
    it is lost (or cannot be made at start-up) the watcher polls every ``poll_interval``
    and tries to make it again; the ``wait`` that makes it returns True at once, so the
    daemon ends its outage's backoff and scans for what it missed.
    """

    def __init__(self, connect: Callable[[], Any], location: str, wake_fd: int, poll_interval: float) -> None:
        self.connect = connect
        self.location = location
        self.wake_fd = wake_fd
        self.poll_interval = poll_interval
        self._connection: Any = None
        self._down_since: float | None = None
        self._connect()

    @property
    def mode(self) -> str:
        """``listen`` while the listening connection is up, else ``polling``."""
        return "listen" if self._connection is not None else "polling"

    def _connect(self) -> bool:
        try:
            connection: Any = self.connect()
            cursor = connection.cursor()
            cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
            cursor.close()
        except Exception as exc:  # noqa: BLE001 - any failure means: poll, try again later
            if self._down_since is None:  # the daemon logs the database's outages; this is only its wake-ups
                self._down_since = time.monotonic()
                log.info("cannot listen for new mail on %s: %s; polling meanwhile", self.location, exc)
            return False
        if self._down_since is not None:
            log.info("listening for new mail on %s again", self.location)
            self._down_since = None
        self._connection = connection
        return True

    def wait(self, timeout: float) -> bool:
        """Return on a notification, the wake descriptor, or after ``timeout`` seconds;
        True, at once, when the lost listening connection has just been made again."""
        if self._connection is None:
            if self._connect():
                return True  # the database is back: scan at once for what was missed
            timeout = min(timeout, self.poll_interval)
        fds = [self.wake_fd] + ([self._connection.fileno()] if self._connection is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except (InterruptedError, ValueError, OSError):
            ready = []
        if self.wake_fd in ready:
            _drain(self.wake_fd)
        if self._connection is not None and self._connection.fileno() in ready:
            self._consume()
        return False

    def _consume(self) -> None:
        try:
            if hasattr(self._connection, "poll"):  # psycopg2
                self._connection.poll()
                self._connection.notifies.clear()
            else:  # psycopg 3
                for _notify in self._connection.notifies(timeout=0):
                    pass
        except Exception as exc:  # noqa: BLE001 - the connection died: poll until it is back
            self._drop(exc)

    def _drop(self, exc: Exception) -> None:
        log.info("lost the listening connection to %s: %s; polling until it is back", self.location, exc)
        self._down_since = time.monotonic()
        try:
            self._connection.close()
        except Exception:  # noqa: BLE001, S110 - it is gone either way
            pass
        self._connection = None

    def close(self) -> None:
        """Close the listening connection; idempotent."""
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except (BlockingIOError, InterruptedError):
        pass
