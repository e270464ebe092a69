"""``mq-send --daemon``: stay running and send each message moments after its commit.

Woken by inotify on ``new/`` (polling where inotify is missing), and by a timer for the
next deferred message. Keeps the SMTP session open between messages and closes it when
idle. Backs off from a server that cannot be used (not from each message) and logs
outages once per change. SIGTERM/SIGINT finish the message in flight, QUIT and exit 0;
SIGHUP reopens the log files. One daemon per queue, enforced by a lock file.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import (
    ConfigurationError,
    DaemonAlreadyRunning,  # noqa: F401 - importable from here, as before
    QueueUnavailableError,
)
from .exit_status import SendExit
from .interfaces import IMailWatcher
from .sender import RunResult, Sender

if TYPE_CHECKING:  # imported by cli_send only with --metrics-file: prometheus_client costs start-up time
    from .metrics import Metrics

log = logging.getLogger("mq_transaction.daemon")


def notify_systemd(state: str) -> None:
    """Send ``state`` (e.g. ``READY=1``) to systemd when run as a ``Type=notify`` service."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)


def reopen_log_files() -> None:
    """Close every logging FileHandler's stream; it reopens on the next record (logrotate)."""
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream:
                        handler.stream.close()
                    handler.stream = None
                finally:
                    handler.release()


class Daemon:
    """The long-running sender. ``run()`` returns the exit status (0 after SIGTERM)."""

    #: Seconds between the server retries after an outage: doubling up to the cap.
    SERVER_RETRY_FIRST, SERVER_RETRY_MAX = 5.0, 30.0
    #: New mail committed during an outage tries the server at once, but at most this often.
    PROBE_EVERY = 3.0
    HOUSEKEEPING_EVERY = 60.0
    METRICS_EVERY = 15.0

    def __init__(
        self,
        sender: Sender,
        *,
        metrics: Metrics | None = None,
        poll_interval: float = 1.0,
        idle_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sender = sender
        self.queue = sender.queue
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.stopping = False
        self._reopen = False
        self._locked = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.server_down_since: float | None = None
        self.server_retry_at = 0.0
        #: The same for the queue itself (a database queue away: restart, fail-over, network).
        self.queue_down_since: float | None = None
        self.queue_retry_at = 0.0
        self._queue_retry_delay = self.SERVER_RETRY_FIRST
        self._server_retry_delay = self.SERVER_RETRY_FIRST
        self._last_server_try = 0.0
        self._tried: frozenset[str] = frozenset()  # what was due at the last try of the server
        sender.server_error_level = logging.DEBUG

    # -- control ------------------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Take the queue's daemon lock, or raise :class:`DaemonAlreadyRunning`."""
        self.queue.daemon_lock()
        self._locked = True

    def request_stop(self, *_args: object) -> None:
        """Finish the message in flight, then stop (the SIGTERM/SIGINT handler)."""
        self.stopping = True
        self._wake()

    def request_reopen(self, *_args: object) -> None:
        """Reopen log files at the next opportunity (the SIGHUP handler)."""
        self._reopen = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop, SIGHUP reopens the logs."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reopen)

    # -- the loop -------------------------------------------------------------------------

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Serve until stopped; return 0, or 2 when the queue turns out to be misconfigured.

        A database queue that cannot be reached at start-up is waited for like any later
        outage; its tables are checked once it can be, and missing or foreign tables stop
        the daemon with status 2 (a configuration error: waiting would not fix it).
        """
        if not self._locked:
            self.acquire_lock()
        watcher = self.queue.watch(self._wake_r, self.poll_interval)
        try:
            self._serve(watcher, ready)
        except ConfigurationError as exc:
            log.error("%s; the daemon stops", exc)
            return SendExit.USAGE
        finally:
            notify_systemd("STOPPING=1")
            self.sender.close()
            watcher.close()
            if self.metrics is not None:
                self._write_metrics()
            log.info("mq-send daemon stopped")
        return SendExit.OK

    def _serve(self, watcher: IMailWatcher, ready: Callable[[], None] | None) -> None:
        housekeeping_at = metrics_at = 0.0
        first = True
        while not self.stopping:
            now = self.clock()
            result = RunResult()
            try:
                due: list[str] = []
                if now >= self.queue_retry_at:
                    if now >= housekeeping_at:
                        self.sender.housekeeping(result)
                        housekeeping_at = now + self.HOUSEKEEPING_EVERY
                    due = self.queue.due(now) if now >= self.server_retry_at else self._new_mail_probe(now)
                    self._queue_state(None)
            except QueueUnavailableError as exc:  # a database queue's restart or fail-over
                self._queue_state(exc)
            if first:  # ready once the queue has been scanned, before the backlog is sent
                first = False
                log.info(
                    "mq-send daemon ready: pid %d, queue %s, waking by %s, %s",
                    os.getpid(),
                    self.queue.location,
                    watcher.mode,
                    f"{len(due)} message(s) due"
                    if self.queue_down_since is None
                    else "waiting for the queue to be usable",
                )
                notify_systemd("READY=1")
                if ready:
                    ready()
            if due:
                self._last_server_try, self._tried = now, frozenset(due)
                try:
                    self.sender.deliver(due, result, should_stop=lambda: self.stopping)
                except QueueUnavailableError as exc:
                    self._queue_state(exc)
                self._server_state(result)
            if self.metrics is not None:
                self.metrics.add_run(result, server_usable=self.server_down_since is None)
                if result.attempts or result.corrupt or now >= metrics_at:
                    self._write_metrics()
                    metrics_at = now + self.METRICS_EVERY
            if self._reopen:
                self._reopen = False
                reopen_log_files()
                if self.sender.delivery_log is not None:
                    self.sender.delivery_log.reopen()
                log.info("log files reopened")
            if self.stopping:
                break
            self._close_if_idle()
            if watcher.wait(self._timeout(housekeeping_at, metrics_at)) and self.queue_down_since is not None:
                # The watcher reached the database again (within its poll interval of the
                # database's return): try the queue now, not at the end of the backoff.
                self.queue_retry_at = 0.0

    def _write_metrics(self) -> None:
        if self.metrics is None:
            return
        try:
            self.metrics.write(self.queue)
        except QueueUnavailableError as exc:  # its gauges need the queue; the counters wait for the next write
            if self.queue_down_since is None:
                self._queue_state(exc)
        except ConfigurationError:  # the queue's tables are wrong: the daemon is stopping for it
            pass
        except OSError as exc:
            log.error("cannot write metrics file %s: %s", self.metrics.path, exc)

    def _new_mail_probe(self, now: float) -> list[str]:
        """During an outage: what is due, when mail arrived since the server was last tried.

        New mail means someone is waiting for it, so the server is tried at once instead of
        at the end of the outage's backoff, but no more often than ``PROBE_EVERY``. Messages
        that went back to ``new/`` after the failed try are not new.
        """
        if self.server_down_since is None:
            return []
        due = self.queue.due(now)
        if not set(due) - self._tried:
            return []
        probe_at = self._last_server_try + self.PROBE_EVERY
        if now >= probe_at:
            log.info("new mail during the outage: trying the SMTP server now")
            return due
        self.server_retry_at = min(self.server_retry_at, probe_at)  # the wait below ends then
        return []

    def _queue_state(self, problem: QueueUnavailableError | None) -> None:
        """Track whether the queue (a database) can be used; log only when that changes."""
        now = self.clock()
        if problem is not None:
            if self.queue_down_since is None:
                self.queue_down_since = now
                log.error(
                    "%s; no mail is lost: retrying every %.0f-%.0fs",
                    problem,
                    self.SERVER_RETRY_FIRST,
                    self.SERVER_RETRY_MAX,
                )
            else:
                self._queue_retry_delay = min(self._queue_retry_delay * 2, self.SERVER_RETRY_MAX)
            self.queue_retry_at = now + self._queue_retry_delay
        elif self.queue_down_since is not None:
            log.warning("the queue %s is back after %.0fs", self.queue.location, now - self.queue_down_since)
            self.queue_down_since = None
            self._queue_retry_delay = self.SERVER_RETRY_FIRST
            self.queue_retry_at = 0.0

    def _server_state(self, result: RunResult) -> None:
        """Track the server's health; log only when it changes."""
        now = self.clock()
        if result.server_error:
            if self.server_down_since is None:
                self.server_down_since = result.server_failed_at or now
                log.error(
                    "SMTP server cannot be used: %s; mail stays queued, retrying the server every %.0f-%.0fs",
                    result.server_error,
                    self.SERVER_RETRY_FIRST,
                    self.SERVER_RETRY_MAX,
                )
            else:
                self._server_retry_delay = min(self._server_retry_delay * 2, self.SERVER_RETRY_MAX)
            self.server_retry_at = now + self._server_retry_delay
        elif result.attempts and self.server_down_since is not None:
            # The outage lasted from the first failure to the first message the server took,
            # not to the end of the backlog that followed.
            back_at = result.first_attempt_at or now
            log.warning(
                "SMTP server is back after %.1fs; delivering the backlog", max(0.0, back_at - self.server_down_since)
            )
            self.server_down_since = None
            self._server_retry_delay = self.SERVER_RETRY_FIRST
            self.server_retry_at = 0.0

    def _close_if_idle(self) -> None:
        if self.sender.session is not None and self.clock() - self.sender.last_activity >= self.idle_timeout:
            log.debug("closing the idle SMTP session")
            self.sender.close()

    def _timeout(self, housekeeping_at: float, metrics_at: float) -> float:
        now = self.clock()
        if self.queue_down_since is not None:
            # Nothing but the queue's next try is due: housekeeping and metrics need the
            # queue too (their times are past during a long outage; they would spin).
            waits = [self.queue_retry_at - now]
            if self.sender.session is not None:
                waits.append(self.sender.last_activity + self.idle_timeout - now)
            return max(0.0, min(waits))
        candidates = [housekeeping_at - now]
        if self.metrics is not None:
            candidates.append(metrics_at - now)
        if self.sender.session is not None:
            candidates.append(self.sender.last_activity + self.idle_timeout - now)
        if self.server_down_since is not None:
            candidates.append(self.server_retry_at - now)
        try:
            next_retry = self.queue.next_retry_time()
        except QueueUnavailableError as exc:
            self._queue_state(exc)
            return max(0.0, min(candidates + [self.queue_retry_at - now]))
        if next_retry is not None:
            candidates.append(max(next_retry, self.server_retry_at) - now)
        return max(0.0, min(candidates))
