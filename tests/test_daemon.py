"""``mq-send --daemon``: prompt sending, outages, SIGTERM, one daemon per queue, metrics.

The tests that take ``backend`` run on both queues (the directory queue, the database
queue). The one-daemon-per-queue lock is the directory queue's alone (several daemons on
one database queue are the point of it: tests/test_database_*.py), and the tests of
command-line checks made before any queue is opened take a directory queue only.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import transaction
from daemon_processes import MQ_SEND, ready_line, wait_for
from daemon_processes import start_daemon as start_daemon_process
from prometheus_client.parser import text_string_to_metric_families
from queue_backends import QueueBackend
from smtp_sinks import RecordingHandler, Sink, free_port

from mq_transaction import MessageQueue, QueuedMailer
from mq_transaction.daemon import Daemon
from mq_transaction.hooks import Hooks
from mq_transaction.metrics import Metrics
from mq_transaction.sender import Sender


def commit_messages(backend, count, fsync=True, per_transaction=1):
    """Commit ``count`` messages through a queue object of the daemon's queue, as an app would
    (``per_transaction`` of them in each transaction; ``fsync=False``: a quicker directory queue)."""
    queue = backend.open(fsync=False) if not fsync and not backend.is_database else backend.queue
    mailer = QueuedMailer(queue)
    for first in range(0, count, per_transaction):
        with transaction.manager:
            for number in range(first, min(count, first + per_transaction)):
                mailer.send(f"From: app@example.com\nTo: u{number}@example.org\nSubject: {number}\n\nhello\n".encode())


def start_daemon(backend, port, *extra):
    """The ready daemon of ``backend``'s queue; ``ready_line`` says how it wakes."""
    process, lines = start_daemon_process(backend.args, port, *extra)
    process.ready_line = ready_line(lines)
    return process


@pytest.fixture
def backend(queue_backend):
    """The queue of the test: the directory queue, then the database queue."""
    return queue_backend


@pytest.fixture
def queue_dir(tmp_path):
    """A directory queue, for what only it has."""
    MessageQueue(tmp_path / "q")
    return tmp_path / "q"


@pytest.mark.slow
def test_daemon_sends_a_message_committed_after_it_started(backend, smtp_sink):
    daemon = start_daemon(backend, smtp_sink.port)
    try:
        assert ("waking by listen" if backend.is_database else "waking by inotify") in daemon.ready_line
        commit_messages(backend, 1)
        assert wait_for(lambda: len(smtp_sink.received) == 1, timeout=10)
        commit_messages(backend, 2)
        assert wait_for(lambda: len(smtp_sink.received) == 3, timeout=10)
        assert smtp_sink.handler.sessions == 1  # the session stayed open between messages
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0


@pytest.mark.slow
def test_second_daemon_on_the_same_queue_is_refused_with_status_2(queue_dir, smtp_sink):
    """Directory only: its daemon lock file. Any number of daemons share a database queue."""
    first = start_daemon(QueueBackend("directory", str(queue_dir)), smtp_sink.port)
    try:
        second = subprocess.run(
            [*MQ_SEND, "--daemon", "--queue-dir", str(queue_dir), "--smtp-port", str(smtp_sink.port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2
        assert "already running" in second.stderr and second.stderr.count("\n") == 1
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == 0


@pytest.mark.slow
def test_sigterm_mid_backlog_loses_nothing_and_exits_0(backend, smtp_sink):
    commit_messages(backend, 1500, fsync=False, per_transaction=50)  # a backlog, quickly
    daemon = start_daemon(backend, smtp_sink.port)
    assert wait_for(lambda: len(smtp_sink.received) >= 100)
    daemon.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert daemon.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    left = collections.Counter(entry.state for entry in backend.queue.entries())
    assert set(left) <= {"queued"}  # nothing stranded in sending/
    sent = len(smtp_sink.received)
    assert sent + left["queued"] == 1500
    assert 0 < left["queued"]
    Sender(backend.parse(smtp_port=smtp_sink.port)).run()
    ids = collections.Counter(smtp_sink.handler.message_ids())
    assert len(ids) == 1500 and max(ids.values()) == 1


@pytest.mark.slow
def test_daemon_survives_an_outage_and_delivers_the_backlog_after_it(backend, monkeypatch):
    monkeypatch.setattr(Daemon, "SERVER_RETRY_FIRST", 0.2)
    monkeypatch.setattr(Daemon, "SERVER_RETRY_MAX", 0.5)
    port = free_port()
    settings = backend.parse(smtp_port=port, smtp_timeout="2s")
    daemon = Daemon(Sender(settings), poll_interval=0.1)
    ready = threading.Event()
    thread = threading.Thread(target=daemon.run, kwargs={"ready": ready.set})
    thread.start()
    sink = None
    try:
        assert ready.wait(10)
        commit_messages(backend, 3)
        assert wait_for(lambda: daemon.server_down_since is not None, timeout=10)
        time.sleep(1.0)  # several server retries while it is down
        assert thread.is_alive()
        assert len(list(backend.queue.entries("queued"))) == 3
        sink = Sink(RecordingHandler(), port=port)
        assert wait_for(lambda: len(sink.received) == 3, timeout=15)
        assert wait_for(lambda: daemon.server_down_since is None, timeout=5)
    finally:
        daemon.request_stop()
        thread.join(10)
        if sink:
            sink.stop()
    assert not thread.is_alive()


@pytest.mark.slow
def test_outage_is_logged_once_per_state_change(backend, monkeypatch, caplog):
    monkeypatch.setattr(Daemon, "SERVER_RETRY_FIRST", 0.05)
    monkeypatch.setattr(Daemon, "SERVER_RETRY_MAX", 0.1)
    settings = backend.parse(smtp_port=free_port())
    commit_messages(backend, 5)
    daemon = Daemon(Sender(settings), poll_interval=0.05)
    thread = threading.Thread(target=daemon.run)
    with caplog.at_level("INFO", logger="mq_transaction"):
        thread.start()
        time.sleep(1.0)
        daemon.request_stop()
        thread.join(10)
    outage_lines = [r for r in caplog.records if "cannot be used" in r.getMessage() and r.levelname == "ERROR"]
    assert len(outage_lines) == 1


@pytest.mark.slow
def test_metrics_file_parses_and_counts_deliveries_across_runs(backend, smtp_sink, tmp_path):
    metrics_file = tmp_path / "mq.prom"

    def run(port):
        args = [*backend.args, "--smtp-port", str(port), "--metrics-file", str(metrics_file), "-q"]
        subprocess.run([*MQ_SEND, *args], capture_output=True, text=True, timeout=60)
        return {f.name: f for f in text_string_to_metric_families(metrics_file.read_text())}

    commit_messages(backend, 2)
    run(smtp_sink.port)
    commit_messages(backend, 1)
    families = run(smtp_sink.port)
    assert families["mq_messages_delivered"].samples[0].value == 3  # counters add up across runs
    outcomes = {(s.labels["outcome"], s.labels["class"]): s.value for s in families["mq_recipient_outcomes"].samples}
    assert outcomes == {("delivered", "2xx"): 3}
    assert families["mq_last_success_timestamp_seconds"].samples[0].value > time.time() - 60

    commit_messages(backend, 1)
    families = run(free_port())  # the server is down
    states = {s.labels["state"]: s.value for s in families["mq_messages"].samples}
    assert states == {"queued": 1, "sending": 0, "deferred": 0, "held": 0, "failed": 0, "corrupt": 0}
    assert families["mq_smtp_connection_errors"].samples[0].value == 1
    assert families["mq_messages_delivered"].samples[0].value == 3
    assert 0 <= families["mq_oldest_message_age_seconds"].samples[0].value < 60


@pytest.mark.slow
def test_sighup_reopens_the_delivery_log(backend, smtp_sink, tmp_path):
    log_file = tmp_path / "delivery.log"
    daemon = start_daemon(backend, smtp_sink.port, "--delivery-log", str(log_file))
    try:
        commit_messages(backend, 1)
        assert wait_for(lambda: log_file.exists() and log_file.read_text().count("\n") == 1)
        os.rename(log_file, tmp_path / "delivery.log.1")
        daemon.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        commit_messages(backend, 1)
        assert wait_for(lambda: log_file.exists() and log_file.read_text().count("\n") == 1)
        assert (tmp_path / "delivery.log.1").read_text().count("\n") == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0


@pytest.mark.slow
def test_rotated_delivery_and_dialog_logs_are_reopened_without_a_signal(backend, smtp_sink, tmp_path):
    delivery_log, dialog_log = tmp_path / "delivery.log", tmp_path / "smtp.log"
    daemon = start_daemon(backend, smtp_sink.port, "--delivery-log", str(delivery_log), "--smtp-log", str(dialog_log))
    try:
        commit_messages(backend, 1)
        assert wait_for(lambda: delivery_log.exists() and delivery_log.read_text().count("\n") == 1)
        os.rename(delivery_log, tmp_path / "delivery.log.1")  # what logrotate does, without SIGHUP
        os.rename(dialog_log, tmp_path / "smtp.log.1")
        commit_messages(backend, 1)
        assert wait_for(lambda: delivery_log.exists() and delivery_log.read_text().count("\n") == 1)
        assert wait_for(lambda: dialog_log.exists() and "DATA" in dialog_log.read_text())
        assert (tmp_path / "delivery.log.1").read_text().count("\n") == 1
        assert oct(dialog_log.stat().st_mode & 0o777) == oct(0o600)  # it holds addresses
        assert oct(delivery_log.stat().st_mode & 0o777) == oct(0o640)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0


def test_metrics_writer_is_atomic_and_keeps_counters(tmp_path, backend):
    from mq_transaction.sender import RunResult

    metrics = Metrics(str(tmp_path / "m.prom"))
    metrics.add_run(RunResult(delivered=2, failed=1))
    metrics.write(backend.queue)
    metrics.add_run(RunResult(delivered=1))
    metrics.write(backend.queue)
    text = (tmp_path / "m.prom").read_text()
    assert "mq_messages_delivered_total 3" in text and "mq_messages_failed_total 1" in text
    assert [p for p in os.listdir(tmp_path) if p.startswith(".mq-metrics")] == []


@pytest.mark.slow
def test_metrics_file_in_a_missing_directory_is_a_configuration_error(queue_dir, tmp_path):
    done = subprocess.run(
        [*MQ_SEND, "--queue-dir", str(queue_dir), "--metrics-file", str(tmp_path / "absent" / "m.prom")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "mq.metrics_file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_daemon_refuses_one_shot_flags(queue_dir):
    done = subprocess.run(
        [*MQ_SEND, "--daemon", "--flush", "--queue-dir", str(queue_dir)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--flush" in done.stderr


def test_last_success_does_not_advance_while_the_server_is_known_down(tmp_path, backend):
    from mq_transaction.sender import RunResult

    metrics = Metrics(str(tmp_path / "m.prom"))
    metrics.add_run(RunResult(), server_usable=False)
    metrics.write(backend.queue)
    assert last_success(tmp_path / "m.prom") == 0
    metrics.add_run(RunResult(delivered=1))
    metrics.write(backend.queue)
    assert last_success(tmp_path / "m.prom") > time.time() - 60


def last_success(path):
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    return families["mq_last_success_timestamp_seconds"].samples[0].value


def run_daemon_in_thread(backend, port):
    settings = backend.parse(smtp_port=port, smtp_timeout="2s")
    daemon = Daemon(Sender(settings), poll_interval=0.1)
    ready = threading.Event()
    thread = threading.Thread(target=daemon.run, kwargs={"ready": ready.set})
    thread.start()
    assert ready.wait(10)
    return daemon, thread


def test_new_mail_during_an_outage_probes_the_server_within_seconds(backend, monkeypatch):
    monkeypatch.setattr(Daemon, "SERVER_RETRY_FIRST", 60.0)  # the outage's own backoff would wait a minute
    monkeypatch.setattr(Daemon, "SERVER_RETRY_MAX", 60.0)
    port = free_port()
    commit_messages(backend, 1)
    daemon, thread = run_daemon_in_thread(backend, port)
    sink = None
    try:
        assert wait_for(lambda: daemon.server_down_since is not None, timeout=10)
        sink = Sink(RecordingHandler(), port=port)  # the relay is back...
        commit_messages(backend, 1)  # ...and new mail is committed
        committed = time.monotonic()
        assert wait_for(lambda: len(sink.received) == 2, timeout=10)
        assert time.monotonic() - committed < 5.0
        assert wait_for(lambda: daemon.server_down_since is None, timeout=5)
    finally:
        daemon.request_stop()
        thread.join(10)
        if sink:
            sink.stop()


def test_mail_sent_back_to_the_queue_by_a_failed_try_does_not_count_as_new(backend, monkeypatch):
    monkeypatch.setattr(Daemon, "SERVER_RETRY_FIRST", 60.0)
    monkeypatch.setattr(Daemon, "SERVER_RETRY_MAX", 60.0)
    monkeypatch.setattr(Daemon, "PROBE_EVERY", 0.1)
    tries = []
    monkeypatch.setattr(Sender, "deliver", lambda self, *args, **kwargs: tries.append(args[0]) or args[1])
    monkeypatch.setattr(Sender, "_server_failed", lambda *args: False)
    commit_messages(backend, 2)
    daemon, thread = run_daemon_in_thread(backend, free_port())
    try:
        assert wait_for(lambda: len(tries) == 1, timeout=10)
        daemon.server_down_since = time.time()  # as a failed try leaves it (deliver is replaced here)
        daemon.server_retry_at = time.time() + 60
        daemon._wake()
        time.sleep(0.5)
        assert len(tries) == 1  # woken, but nothing new: no probe
        commit_messages(backend, 1)
        assert wait_for(lambda: len(tries) == 2, timeout=5)  # new mail: a probe
        assert len(tries[1]) == 3
    finally:
        daemon.request_stop()
        thread.join(10)


class SlowHandler(RecordingHandler):
    """Takes 0.3 s to accept each message: a backlog that takes a while to deliver."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await asyncio.sleep(0.3)
        return await super().handle_DATA(server, session, envelope)


def test_server_back_reports_the_downtime_not_the_time_to_deliver_the_backlog(backend, monkeypatch, caplog):
    monkeypatch.setattr(Daemon, "SERVER_RETRY_FIRST", 0.2)
    monkeypatch.setattr(Daemon, "SERVER_RETRY_MAX", 0.2)
    port = free_port()
    commit_messages(backend, 10)
    sink = None
    with caplog.at_level("INFO", logger="mq_transaction"):
        daemon, thread = run_daemon_in_thread(backend, port)
        try:
            assert wait_for(lambda: daemon.server_down_since is not None, timeout=10)
            time.sleep(1.0)
            sink = Sink(SlowHandler(), port=port)  # down about 1 s; the backlog then takes 3 s
            assert wait_for(lambda: len(sink.received) == 10, timeout=20)
        finally:
            daemon.request_stop()
            thread.join(10)
            if sink:
                sink.stop()
    [line] = [r.getMessage() for r in caplog.records if "is back after" in r.getMessage()]
    downtime = float(re.search(r"back after ([\d.]+)s", line).group(1))
    assert 0.8 <= downtime <= 2.0, line


def test_a_hook_calling_sys_exit_does_not_stop_the_daemon(backend, smtp_sink, caplog):
    hooks = Hooks()
    hooks.add("delivered", lambda event: sys.exit(3))
    settings = backend.parse(smtp_port=smtp_sink.port)
    daemon = Daemon(Sender(settings, hooks=hooks), poll_interval=0.1)
    ready = threading.Event()
    thread = threading.Thread(target=daemon.run, kwargs={"ready": ready.set})
    with caplog.at_level("ERROR", logger="mq_transaction"):
        thread.start()
        try:
            assert ready.wait(10)
            commit_messages(backend, 1)
            assert wait_for(lambda: len(smtp_sink.received) == 1)
            commit_messages(backend, 1)  # still serving after the hook's sys.exit()
            assert wait_for(lambda: len(smtp_sink.received) == 2)
            assert thread.is_alive()
        finally:
            daemon.request_stop()
            thread.join(10)
    assert any("hook" in r.getMessage() and "raised" in r.getMessage() for r in caplog.records)
