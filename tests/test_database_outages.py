"""The database going away under a database queue: ``pg_ctl restart`` while the daemon idles
and in the middle of a drain. Nothing is lost, and delivery resumes by itself.

These tests restart a PostgreSQL server of their own (not the shared one of the run).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa
from daemon_processes import start_daemon, wait_for
from postgres_server import INSTALL_HINT, PostgresServer, count_messages, server_bindir

from mq_transaction import DatabaseQueue, QueueUnavailableError
from mq_transaction.daemon import Daemon
from mq_transaction.queuefile import Envelope
from mq_transaction.sender import Sender
from mq_transaction.settings import parse_settings

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


def subjects(sink) -> list[bytes]:
    return [r.content.split(b"Subject: ")[1].split(b"\r\n")[0] for r in sink.received]


def stop(daemon: subprocess.Popen, lines: list[str]) -> None:
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, "".join(lines)


def test_an_idle_daemon_survives_a_restart_and_sends_what_commits_after_it(server, url, smtp_sink):
    daemon, lines = start_daemon(["--queue-url", url], smtp_sink.port)
    try:
        server.restart()
        enqueue(url, 3)
        assert wait_for(lambda: len(smtp_sink.received) == 3, 60), "".join(lines)
        assert count_messages(url) == 0
    finally:
        stop(daemon, lines)
    log = "".join(lines)
    assert "Traceback" not in log


def test_a_restart_in_the_middle_of_a_drain_loses_nothing(server, url, smtp_sink):
    enqueue(url, 300)
    daemon, lines = start_daemon(["--queue-url", url], smtp_sink.port)
    try:
        assert wait_for(lambda: len(smtp_sink.received) >= 30, 60), "".join(lines)
        server.restart()
        assert wait_for(lambda: count_messages(url) == 0, 120, interval=0.1), "".join(lines)
    finally:
        stop(daemon, lines)
    received = subjects(smtp_sink)
    assert set(received) == {f"message {n}".encode() for n in range(300)}
    assert len(received) - len(set(received)) <= 1  # at most the message in flight at the restart
    log = "".join(lines)
    outages = log.count("no mail is lost")
    assert outages <= 1 and log.count("is back after") == outages


def test_the_watcher_says_so_when_it_listens_again_after_an_outage(server, url):
    """``wait`` returns True once, in the first poll after the database is back; never else."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
    queue = DatabaseQueue(url)
    watcher = queue.watch(read_fd, 0.2)
    try:
        assert watcher.mode == "listen"
        assert watcher.wait(0.2) is False  # listening, nothing lost
        server.stop()
        started = time.monotonic()
        while watcher.mode == "listen":  # the cut connection is seen at the next wait
            assert watcher.wait(0.2) is False
            assert time.monotonic() - started < 30
        assert [watcher.wait(5.0) for _ in range(3)] == [False] * 3  # polls: it cannot listen yet
        server.start()
        started = time.monotonic()
        while not watcher.wait(5.0):  # each wait polls for 0.2 s, not 5: it tries to listen again
            assert time.monotonic() - started < 10
        assert watcher.mode == "listen"
        assert watcher.wait(0.2) is False  # the return is reported once
    finally:
        watcher.close()
        queue.dispose()
        os.close(read_fd)
        os.close(write_fd)


def test_a_daemon_resumes_within_seconds_of_the_database_coming_back_not_at_the_end_of_its_backoff(
    server, url, smtp_sink, monkeypatch, caplog
):
    """The daemon's listening connection is made again within a poll interval of the
    database's return; the daemon then tries the queue at once, whatever its backoff."""
    monkeypatch.setattr(Daemon, "SERVER_RETRY_FIRST", 60.0)  # the queue's backoff: a minute from the first try
    monkeypatch.setattr(Daemon, "SERVER_RETRY_MAX", 60.0)
    settings = parse_settings({"mq.queue_url": url, "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(smtp_sink.port)})
    daemon = Daemon(Sender(settings), poll_interval=1.0)
    ready = threading.Event()
    thread = threading.Thread(target=daemon.run, kwargs={"ready": ready.set})
    with caplog.at_level(logging.INFO, logger="mq_transaction"):
        thread.start()
        try:
            assert ready.wait(30)
            enqueue(url, 1)  # a delivery before the outage: the pools hold connections it cuts
            assert wait_for(lambda: len(smtp_sink.received) == 1, 30)
            server.stop()
            assert wait_for(lambda: daemon.queue_down_since is not None, 30)
            time.sleep(3)  # the watcher fails to listen again at each of its polls
            assert daemon.queue_retry_at - time.time() > 45  # what the daemon would wait for
            server.start()
            back = time.monotonic()
            enqueue(url, 1)
            assert wait_for(lambda: len(smtp_sink.received) == 2, 15), caplog.text
            print(f"delivered {time.monotonic() - back:.2f}s after the database was back")
            assert wait_for(lambda: count_messages(url) == 0, 15, interval=0.1)
        finally:
            daemon.request_stop()
            thread.join(60)
    assert not thread.is_alive()
    assert subjects(smtp_sink) == [b"message 0", b"message 0"]  # enqueue() numbers each call from 0
    log = caplog.text
    assert log.count("no mail is lost") == 1 and log.count("is back after") == 1, log
    assert "Traceback" not in log


def test_claims_and_records_while_the_database_is_away_are_queue_unavailable_errors(server, url):
    """The sender's hot statements (run through the driver's cursor) say the queue is away,
    whether their pooled connection was cut or no new one can be made; once it is back
    they work again."""
    enqueue(url, 2)
    queue = DatabaseQueue(url, claim_timeout=1)  # the record is retried for half of it
    try:
        first, second = queue.due()
        (claim,), _ = queue.claim_many([first])
        server.stop()
        try:
            with pytest.raises(QueueUnavailableError, match="while recording its delivery"):
                queue.finish_delivered(claim)
            with pytest.raises(QueueUnavailableError, match=f"while claiming queue id {second}"):
                queue.claim_many([second])
        finally:
            server.start()
        claims, problems = queue.claim_many([second])
        assert [c.queue_id for c in claims] == [second] and problems == []
        queue.finish_delivered(claims[0])
    finally:
        queue.dispose()


# -- the database away at start-up ------------------------------------------------------------

PASSWORD = "s3cret-never-shown"


@pytest.fixture
def stopped(server, url):
    """The server stopped (after ``url``'s database was made); started again afterwards."""
    server.stop()
    yield server
    if not server.is_running():
        server.start()


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@")  # the server trusts 127.0.0.1: any password


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used so far (user and system), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def error_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " ERROR " in line]


def test_a_daemon_started_while_the_database_is_down_waits_and_delivers_once_it_is_back(stopped, url, smtp_sink):
    daemon, lines = start_daemon(["--queue-url", with_password(url)], smtp_sink.port)
    try:
        assert any("waiting for the queue to be usable" in line for line in lines), "".join(lines)
        cpu_before = cpu_seconds(daemon.pid)
        time.sleep(6)  # past the first retry: still one line for the outage
        assert daemon.poll() is None, "".join(lines)
        assert cpu_seconds(daemon.pid) - cpu_before < 2.0  # it waits between tries; it does not spin
        stopped.start()
        enqueue(url, 1)
        assert wait_for(lambda: len(smtp_sink.received) == 1, 60), "".join(lines)
        assert count_messages(url) == 0
    finally:
        stop(daemon, lines)
    log = "".join(lines)
    assert log.count("no mail is lost") == 1 and log.count("is back after") == 1, log
    assert len(error_lines(lines)) == 1, log  # the outage, logged once
    assert "cannot connect to the queue database" in error_lines(lines)[0]
    assert "Traceback" not in log
    assert PASSWORD not in log and "***" in log


def test_sigterm_stops_a_daemon_that_waits_for_the_database(stopped, url, smtp_sink):
    daemon, lines = start_daemon(["--queue-url", url], smtp_sink.port)
    time.sleep(1)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0, "".join(lines)
    assert "mq-send daemon stopped" in "".join(lines)


def test_a_daemon_that_finds_no_tables_once_the_database_is_back_exits_2_saying_to_run_init_db(server, url, smtp_sink):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE mq_messages, mq_schema")
    engine.dispose()
    server.stop()
    try:
        daemon, lines = start_daemon(["--queue-url", url], smtp_sink.port)
    finally:
        server.start()
    try:
        assert daemon.wait(timeout=60) == 2, "".join(lines)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    time.sleep(0.2)  # the reader thread's last lines
    log = "".join(lines)
    assert "init-db" in log and "Traceback" not in log


def test_a_one_shot_run_exits_75_while_the_database_is_down(stopped, url, capsys):
    from mq_transaction.cli_send import main as mq_send

    assert mq_send(["--queue-url", with_password(url), "-q"]) == 75
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{stopped.port}" in err
    assert PASSWORD not in err and "***" in err


QUEUE_ID = "20261128T151136123456Z-9f3a2b1c0d"
MQ_QUEUE_COMMANDS = [
    ["status"],
    ["list"],
    ["list", "--json"],
    ["show", QUEUE_ID],
    ["retry", QUEUE_ID],
    ["retry", "--all-failed"],
    ["hold", QUEUE_ID],
    ["release", QUEUE_ID],
    ["discard", QUEUE_ID, "--yes"],
    ["init-db"],
]


@pytest.mark.parametrize("command", MQ_QUEUE_COMMANDS, ids=" ".join)
def test_mq_queue_exits_75_with_one_line_naming_the_masked_url_while_the_database_is_down(
    stopped, url, command, capsys
):
    from mq_transaction.cli_queue import main as mq_queue

    assert mq_queue(["--queue-url", with_password(url), *command]) == 75
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mq-queue: error: ") and captured.err.count("\n") == 1, captured.err
    assert f"postgresql+psycopg://postgres:***@127.0.0.1:{stopped.port}/outage" in captured.err
    assert PASSWORD not in captured.err


def test_mq_queue_in_a_subprocess_gives_no_traceback_while_the_database_is_down(stopped, url):
    result = subprocess.run(
        [sys.executable, "-m", "mq_transaction.cli_queue", "--queue-url", with_password(url), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 75
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr


# -- a database host that accepts connections and never answers ------------------------------


@pytest.fixture
def silent_url():
    """The URL of a "database" on 127.0.0.1 that accepts connections and never says a word
    (a frozen server): without a connection timeout, a client would wait for good."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"postgresql://mail:{PASSWORD}@127.0.0.1:{listener.getsockname()[1]}/app"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_mq_queue_gives_up_on_a_database_that_never_answers_and_exits_75(silent_url):
    result = subprocess.run(
        [sys.executable, "-m", "mq_transaction.cli_queue", "--queue-url", silent_url, "status"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,  # it would wait for good without a connection timeout
    )
    assert result.returncode == 75, result.stderr
    assert "timeout" in result.stderr and result.stderr.count("\n") == 1
    assert PASSWORD not in result.stderr


def test_a_daemon_waiting_for_a_database_that_never_answers_still_stops_on_sigterm(silent_url, smtp_sink):
    daemon, lines = start_daemon(["--queue-url", silent_url], smtp_sink.port)
    assert any("waiting for the queue to be usable" in line for line in lines), "".join(lines)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, "".join(lines)
    log = "".join(lines)
    assert log.count("no mail is lost") == 1 and "Traceback" not in log and PASSWORD not in log


def test_import_dir_exits_75_and_moves_nothing_while_the_database_is_down(stopped, url, tmp_path, capsys):
    from mq_transaction import MessageQueue
    from mq_transaction.cli_queue import main as mq_queue

    directory = MessageQueue(tmp_path / "queue")
    queue_id = directory.enqueue(
        Envelope.new("app@example.com", ["ann@example.org"], time.time(), ""), b"Subject: x\r\n\r\nHi\r\n"
    )
    assert mq_queue(["--queue-url", with_password(url), "import-dir", directory.path]) == 75
    err = capsys.readouterr().err
    assert err.startswith("mq-queue: error: cannot connect to the queue database") and PASSWORD not in err
    assert [entry.queue_id for entry in directory.entries()] == [queue_id]
