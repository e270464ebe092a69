"""The database going away under a database queue: ``pg_ctl restart`` while the daemon idles
and in the middle of a drain. Nothing is lost, and delivery resumes by itself.

These tests restart a PostgreSQL server of their own (not the shared one of the run).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa
from postgres_server import INSTALL_HINT, PostgresServer, server_bindir

from mq_transaction import DatabaseQueue
from mq_transaction.queuefile import Envelope

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    bindir = server_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def url(server):
    engine = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.exec_driver_sql("DROP DATABASE IF EXISTS outage WITH (FORCE)")
        connection.exec_driver_sql("CREATE DATABASE outage")
    engine.dispose()
    url = server.url("outage")
    queue = DatabaseQueue(url)
    queue.init_db()
    queue.dispose()
    return url


def enqueue(url: str, count: int, first: int = 0) -> None:
    queue = DatabaseQueue(url)
    for number in range(first, first + count):
        message = f"From: app@example.com\r\nTo: ann@example.org\r\nSubject: message {number}\r\n\r\nHi.\r\n"
        queue.enqueue(Envelope.new("app@example.com", ["ann@example.org"], time.time(), ""), message.encode())
    queue.dispose()


def remaining(url: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        count = connection.execute(sa.text("select count(*) from mq_messages")).scalar()
    engine.dispose()
    return int(count or 0)


def subjects(sink) -> list[bytes]:
    return [r.content.split(b"Subject: ")[1].split(b"\r\n")[0] for r in sink.received]


def start_daemon(url: str, port: int) -> tuple[subprocess.Popen, list[str]]:
    daemon = subprocess.Popen(
        [sys.executable, "-m", "mq_transaction.cli_send", "--queue-url", url, "--daemon"]
        + ["--smtp-host", "127.0.0.1", "--smtp-port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        for line in daemon.stderr:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not any("daemon ready" in line for line in lines):
        assert daemon.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.05)
    return daemon, lines


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def stop(daemon: subprocess.Popen, lines: list[str]) -> None:
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, "".join(lines)


def test_an_idle_daemon_survives_a_restart_and_sends_what_commits_after_it(server, url, smtp_sink):
    daemon, lines = start_daemon(url, smtp_sink.port)
    try:
        server.restart()
        enqueue(url, 3)
        assert wait_for(lambda: len(smtp_sink.received) == 3, 60), "".join(lines)
        assert remaining(url) == 0
    finally:
        stop(daemon, lines)
    log = "".join(lines)
    assert "Traceback" not in log


def test_a_restart_in_the_middle_of_a_drain_loses_nothing(server, url, smtp_sink):
    enqueue(url, 300)
    daemon, lines = start_daemon(url, smtp_sink.port)
    try:
        assert wait_for(lambda: len(smtp_sink.received) >= 30, 60), "".join(lines)
        server.restart()
        assert wait_for(lambda: remaining(url) == 0, 120), "".join(lines)
    finally:
        stop(daemon, lines)
    received = subjects(smtp_sink)
    assert set(received) == {f"message {n}".encode() for n in range(300)}
    assert len(received) - len(set(received)) <= 1  # at most the message in flight at the restart
    log = "".join(lines)
    outages = log.count("no mail is lost")
    assert outages <= 1 and log.count("is back after") == outages
