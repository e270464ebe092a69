"""A real ``mq-send --daemon`` in a subprocess, and waiting for what it does.

Shared by the daemon, database-outage and symlink suites: ``start_daemon`` starts one on a
queue (``--queue-dir DIR`` or ``--queue-url URL``) against an SMTP server on 127.0.0.1,
returns once it logged that it is ready, and keeps every line it writes to stderr.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

MQ_SEND = [sys.executable, "-m", "mq_transaction.cli_send"]


def start_daemon(queue_args: list[str], port: int, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """The daemon process, ready, and the list its stderr lines keep arriving in.

    Fails (with what it logged) if it exits, or is not ready within 60 seconds.
    """
    daemon = subprocess.Popen(
        [*MQ_SEND, "--daemon", *queue_args, "--smtp-host", "127.0.0.1", "--smtp-port", str(port), *extra],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert daemon.stderr is not None
        for line in daemon.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any("daemon ready" in line for line in lines):
        if daemon.poll() is not None:
            reader.join(5)  # every line it wrote before it exited
            assert any("daemon ready" in line for line in lines), f"daemon exited before it was ready: {''.join(lines)}"
            break
        assert time.monotonic() < deadline, f"daemon not ready after 60 s: {''.join(lines)}"
        time.sleep(0.02)
    return daemon, lines


def ready_line(lines: list[str]) -> str:
    """The daemon's ``ready`` line (it says how it wakes, and what was due)."""
    return next(line for line in lines if "daemon ready" in line)


def wait_for(condition: Callable[[], object], timeout: float = 15.0, interval: float = 0.02) -> bool:
    """True once ``condition()`` is, polled every ``interval`` seconds for up to ``timeout``
    (a condition that queries the database: a longer interval, not to load it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
