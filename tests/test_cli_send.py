"""``mq-send`` as a real subprocess: settings, exit statuses, SIGKILL crashes, concurrent runs.

The tests that take ``queue_backend`` run on both queues (the directory queue, the database
queue). The settings errors are the command line's, checked before a queue is opened: a
directory queue only. SIGKILL stays directory-only here: a killed sender's claims on a
database queue come back only when their lease runs out, which
tests/test_database_many_senders.py tests (with a short ``mq.claim_timeout``).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import transaction

from mq_transaction import MessageQueue, QueuedMailer
from mq_transaction.settings import Settings

MQ_SEND = [sys.executable, "-m", "mq_transaction.cli_send"]


def run_mq_send(*args, timeout=120):
    return subprocess.run([*MQ_SEND, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def fill_queue(queue, count, per_transaction=1):
    """Commit ``count`` distinct 2 KB messages into ``queue`` (a path: a directory queue with
    fsync off, for a quick setup), ``per_transaction`` of them in each transaction."""
    if not hasattr(queue, "stage"):
        queue = MessageQueue(queue, fsync=False)
    mailer = QueuedMailer(queue)
    body = b"x" * 60 + b"\n"
    for first in range(0, count, per_transaction):
        with transaction.manager:
            for number in range(first, min(count, first + per_transaction)):
                message = f"From: app@example.com\nTo: u{number}@example.org\nSubject: {number}\n\n".encode()
                mailer.send(message + body * 33)


def ini_settings(backend) -> str:
    """The ini file lines naming the queue of ``backend``."""
    return "".join(f"{key} = {value}\n" for key, value in backend.settings.items())


def write_ini(path, text):
    path.write_text(text)
    return path


@pytest.mark.slow
def test_reads_mq_settings_from_app_main_and_delivers(queue_backend, tmp_path, smtp_sink):
    fill_queue(queue_backend.queue, 3)
    ini = write_ini(
        tmp_path / "app.ini",
        f"[app:main]\nuse = egg:nothing\n{ini_settings(queue_backend)}mq.smtp_host = 127.0.0.1\n"
        f"mq.smtp_port = {smtp_sink.port}\nmq.delivery_log = {tmp_path / 'delivery.log'}\n",
    )
    done = run_mq_send(ini)
    assert done.returncode == 0, done.stderr
    assert len(smtp_sink.received) == 3
    assert len((tmp_path / "delivery.log").read_text().splitlines()) == 3


@pytest.mark.slow
def test_config_uri_fragment_selects_another_app_section_and_flags_override(queue_backend, tmp_path, smtp_sink):
    fill_queue(queue_backend.queue, 1)
    ini = write_ini(
        tmp_path / "app.ini",
        "[app:main]\nuse = egg:nothing\nmq.queue_dir = /nonexistent\n\n"
        f"[app:mailer]\nuse = egg:nothing\n{ini_settings(queue_backend)}mq.smtp_port = 1\n",
    )
    done = run_mq_send(f"{ini}#mailer", "--smtp-host", "127.0.0.1", "--smtp-port", smtp_sink.port)
    assert done.returncode == 0, done.stderr
    assert len(smtp_sink.received) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("mq.smtp_prot = 25", "mq.smtp_prot"),
        ("mq.smtp_port = twenty-five", "mq.smtp_port"),
        ("mq.min_backoff = soon", "mq.min_backoff"),
        ("mq.smtp_tls = maybe", "mq.smtp_tls"),
        ("mq.on_failed = nowhere.module:hook", "mq.on_failed"),
    ],
)
def test_bad_setting_is_a_one_line_error_naming_the_key_with_status_2(tmp_path, setting, key):
    (tmp_path / "q").mkdir()
    ini = write_ini(tmp_path / "app.ini", f"[app:main]\nuse = egg:x\nmq.queue_dir = {tmp_path / 'q'}\n{setting}\n")
    done = run_mq_send(ini)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and key in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_missing_queue_directory_is_a_configuration_error(tmp_path):
    done = run_mq_send("--queue-dir", tmp_path / "absent")
    assert done.returncode == 2
    assert "mq.queue_dir" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_unreadable_password_file_is_a_configuration_error(tmp_path):
    (tmp_path / "q").mkdir()
    done = run_mq_send("--queue-dir", tmp_path / "q", "--smtp-password-file", tmp_path / "nope")
    assert done.returncode == 2 and "mq.smtp_password_file" in done.stderr


@pytest.mark.slow
def test_exit_status_75_when_the_server_is_down_and_1_when_a_message_fails(queue_backend, smtp_sink):
    fill_queue(queue_backend.queue, 2)
    down = run_mq_send(*queue_backend.args, "--smtp-host", "127.0.0.1", "--smtp-port", "1", "-q")
    assert down.returncode == 75
    smtp_sink.behaviour.rcpt_replies["u0@example.org"] = "550 5.1.1 unknown"
    smtp_sink.behaviour.rcpt_replies["u1@example.org"] = "451 4.3.0 later"
    mixed = run_mq_send(*queue_backend.args, "--smtp-host", "127.0.0.1", "--smtp-port", smtp_sink.port)
    assert mixed.returncode == 1  # 1 wins over 75


@pytest.mark.slow
def test_max_messages_stops_after_n_attempts(queue_backend, smtp_sink):
    fill_queue(queue_backend.queue, 5)
    done = run_mq_send(
        *queue_backend.args, "--smtp-host", "127.0.0.1", "--smtp-port", smtp_sink.port, "--max-messages", 2
    )
    assert done.returncode == 0
    assert len(smtp_sink.received) == 2


def _received_ids(sink):
    return collections.Counter(sink.handler.message_ids())


@pytest.mark.slow
def test_sigterm_finishes_the_messages_in_flight_and_gives_back_the_rest_at_once(queue_backend, smtp_sink):
    """A one-shot run told to stop leaves nothing in sending: no message claimed ahead
    waits for a lease to run out (database queue) or for the next run (directory)."""
    mailer = QueuedMailer(queue_backend.queue, transaction_manager=transaction.TransactionManager(explicit=True))
    for first in range(0, 1500, 50):
        with mailer.transaction_manager:
            for number in range(first, first + 50):
                mailer.send(f"From: app@example.com\nTo: u{number}@example.org\nSubject: {number}\n\nHi.\n".encode())
    args = [*MQ_SEND, *queue_backend.args, "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_sink.port), "-q"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(smtp_sink.received) < 100 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, process.stderr.read()
    left = collections.Counter(entry.state for entry in queue_backend.open().entries())
    assert set(left) <= {"queued"}  # nothing stranded in sending
    assert len(smtp_sink.received) + left["queued"] == 1500 and left["queued"] > 0
    assert run_mq_send(*args[3:]).returncode == 0
    received = _received_ids(smtp_sink)
    assert len(received) == 1500 and max(received.values()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("pipelining", [False, True], ids=["one-command-at-a-time", "pipelining"])
def test_sigkill_at_random_points_loses_nothing_and_duplicates_at_most_one_per_kill(tmp_path, smtp_sink, pipelining):
    # with PIPELINING a session also holds the next message, claimed and begun in the final dot's write
    smtp_sink.handler.offer_pipelining = pipelining
    queue_dir = tmp_path / "q"
    fill_queue(queue_dir, 2000)
    args = [*MQ_SEND, "--queue-dir", str(queue_dir), "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_sink.port)]
    rng = random.Random(20261128)
    kills = 0
    while kills < 6:  # each killed run delivers a part; one that ends by itself drained the queue
        process = subprocess.Popen([*args, "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, 0.4))
        if process.poll() is not None:
            break
        os.kill(process.pid, signal.SIGKILL)
        kills += 1
        process.wait()
    assert kills >= 3, "the drain finished before the kills: make the queue bigger"
    final = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    received = _received_ids(smtp_sink)
    assert len(received) == 2000  # nothing lost
    duplicates = sum(count - 1 for count in received.values())
    # at most the message in flight in each session of a killed sender (docs/guarantees.md)
    assert duplicates <= kills * Settings().smtp_connections
    # a message is in that window for one kill at most each time: a recovered message goes out
    # first in the next run, so a second kill can catch it again (3 copies after 2 kills)
    assert max(received.values()) - 1 <= kills
    assert list(MessageQueue(queue_dir).entries()) == []


@pytest.mark.slow
@pytest.mark.parametrize("pipelining", [False, True], ids=["one-command-at-a-time", "pipelining"])
def test_two_concurrent_senders_deliver_each_message_exactly_once(queue_backend, tmp_path, smtp_sink, pipelining):
    smtp_sink.handler.offer_pipelining = pipelining
    fill_queue(queue_backend.queue, 2000, per_transaction=20)
    args = [*MQ_SEND, *queue_backend.args, "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_sink.port)]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = subprocess.Popen([*args, "-q", "--delivery-log", str(logs[0])], stderr=subprocess.PIPE)
    second = subprocess.Popen([*args, "-q", "--delivery-log", str(logs[1])], stderr=subprocess.PIPE)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.wait(timeout=300) == 0, second.stderr.read()
    received = _received_ids(smtp_sink)
    assert len(received) == 2000
    assert max(received.values()) == 1
    lines = [len(log.read_text().splitlines()) for log in logs]
    assert sum(lines) == 2000 and min(lines) > 0  # both really worked on the queue
    assert list(queue_backend.queue.entries()) == []
