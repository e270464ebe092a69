"""Moving a queue directory's mail into a database queue (``mq-queue import-dir``): ids,
states, envelopes, attempts and bytes kept; nothing lost and nothing doubled by a crash
half-way; refused while a sender uses the directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
import transaction
from daemon_processes import start_daemon

from mq_transaction import MessageQueue, QueuedMailer
from mq_transaction.cli_queue import main as mq_queue
from mq_transaction.database_import import move_queue
from mq_transaction.database_queue import INTERRUPTED_IMPORT_AGE
from mq_transaction.queuefile import Attempt
from mq_transaction.states import AttemptResult, MessageState, RecipientStatus

MQ_QUEUE = [sys.executable, "-m", "mq_transaction.cli_queue"]


def queue_one(queue: MessageQueue, number: int) -> str:
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    with mailer.transaction_manager:
        return mailer.send(f"From: app@example.com\r\nTo: ann@example.org\r\nSubject: m{number}\r\n\r\nHi\xe9.\r\n")


def every_state(directory: MessageQueue) -> dict[str, MessageState]:
    """One message in each state a directory queue has; {queue id: state it should arrive in}."""
    queued, deferred, held, failed, orphan = (queue_one(directory, n) for n in range(5))
    claim = directory.claim(deferred)
    claim.envelope.recipients[0].status = RecipientStatus.DEFERRED
    next_attempt = time.time() + 3600
    claim.envelope.attempts.append(
        Attempt(
            1,
            time.time(),
            "127.0.0.1:25",
            {"ann@example.org": "451 4.3.0 try later"},
            AttemptResult.DEFERRED,
            next_attempt,
        )
    )
    directory.finish_deferred(claim, next_attempt)
    claim = directory.claim(failed)
    claim.envelope.recipients[0].status = RecipientStatus.FAILED
    claim.envelope.failure_reason = "rejected"
    directory.finish_failed(claim)
    directory.move(directory.lock(directory.find(held)), MessageState.QUEUED, MessageState.HELD)
    directory.claim(orphan).release()  # its sender died: the file stays in sending/, unlocked
    assert directory.find(orphan).state == MessageState.SENDING
    return {
        queued: MessageState.QUEUED,
        deferred: MessageState.DEFERRED,
        held: MessageState.HELD,
        failed: MessageState.FAILED,
        orphan: MessageState.QUEUED,
    }


def contents(queue) -> dict[str, tuple[bytes, bytes]]:
    """{queue id: (envelope JSON, message bytes)} of every message."""
    found = {}
    for entry in queue.entries():
        envelope, message = queue.read(entry)
        found[entry.queue_id] = (envelope.to_json(), message)
    return found


def table(url: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("select queue_id, state from mq_messages order by queue_id")).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_import_dir_moves_every_message_with_its_id_state_envelope_attempts_and_bytes(
    tmp_path, db_queue, postgres_url, capsys
):
    directory = MessageQueue(tmp_path / "queue")
    expected = every_state(directory)
    before = contents(directory)
    next_attempt = directory.find(next(i for i, s in expected.items() if s == MessageState.DEFERRED)).next_attempt

    assert mq_queue(["--queue-url", postgres_url, "import-dir", str(tmp_path / "queue")]) == 0

    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6
    for queue_id, state in expected.items():
        assert any(line.startswith(f"queue id {queue_id} ({state}") for line in out), out
    assert out[-1] == f"moved 5 message(s) from {directory.path} to {db_queue.location}"
    assert {entry.queue_id: entry.state for entry in db_queue.entries()} == expected
    assert contents(db_queue) == before  # envelopes (statuses, replies, attempts) and bytes, exactly
    deferred = db_queue.find(next(i for i, s in expected.items() if s == MessageState.DEFERRED))
    assert deferred.next_attempt == pytest.approx(next_attempt, abs=0.01)
    assert [len(db_queue.read(deferred)[0].attempts)] == [1]
    assert sorted(db_queue.due()) == sorted(i for i, s in expected.items() if s == MessageState.QUEUED)
    assert list(directory.entries()) == []


def test_import_dir_from_an_ini_file_names_the_database_queue(tmp_path, db_queue, postgres_url, capsys):
    directory = MessageQueue(tmp_path / "queue")
    queue_id = queue_one(directory, 1)
    ini = tmp_path / "production.ini"
    ini.write_text(f"[app:main]\nmq.queue_url = {postgres_url}\n")
    assert mq_queue([str(ini), "import-dir", directory.path]) == 0
    assert [entry.queue_id for entry in db_queue.entries()] == [queue_id]


def test_a_corrupt_file_is_left_and_reported_and_the_rest_moves(tmp_path, db_queue, postgres_url, capsys):
    directory = MessageQueue(tmp_path / "queue")
    good, bad = queue_one(directory, 1), queue_one(directory, 2)
    path = os.path.join(directory.path, "new", bad)
    with open(path, "r+b") as handle:
        handle.truncate(20)
    assert mq_queue(["--queue-url", postgres_url, "import-dir", directory.path]) == 1
    captured = capsys.readouterr()
    assert f"queue id {good} (queued)" in captured.out
    assert f"mq-queue: error: queue id {bad} left in {directory.path}:" in captured.err
    assert "moved 1 message(s)" in captured.out and "1 left" in captured.out
    assert [entry.queue_id for entry in db_queue.entries()] == [good]
    assert os.path.exists(path)


def test_import_dir_refuses_while_a_daemon_runs_on_the_directory(tmp_path, db_queue, postgres_url, capsys):
    directory = MessageQueue(tmp_path / "queue")
    queue_id = queue_one(directory, 1)
    daemon, _lines = start_daemon(["--queue-dir", directory.path], 1)  # its SMTP server is away: it stays queued
    try:
        assert mq_queue(["--queue-url", postgres_url, "import-dir", directory.path]) == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    err = capsys.readouterr().err
    assert err.startswith("mq-queue: error: another mq-send --daemon is already running on")
    assert "nothing was moved" in err and err.count("\n") == 1
    assert list(db_queue.entries()) == []
    assert [entry.queue_id for entry in directory.entries()] == [queue_id]


def test_import_dir_refuses_while_a_sender_delivers_a_message(tmp_path, db_queue, postgres_url, capsys):
    directory = MessageQueue(tmp_path / "queue")
    first, second = queue_one(directory, 1), queue_one(directory, 2)
    claim = directory.claim(first)  # a one-shot mq-send in the middle of a delivery
    try:
        assert mq_queue(["--queue-url", postgres_url, "import-dir", directory.path]) == 1
    finally:
        claim.release()
    err = capsys.readouterr().err
    assert f"an mq-send is delivering queue id {first}" in err and "nothing was moved" in err
    assert list(db_queue.entries()) == []
    assert directory.find(second).state == MessageState.QUEUED


def test_a_move_interrupted_after_either_step_is_finished_by_the_next_run_without_a_second_copy(
    tmp_path, db_queue, postgres_url
):
    directory = MessageQueue(tmp_path / "queue")
    expected = every_state(directory)
    before = contents(directory)
    stored_only, removed_too, untouched = list(expected)[:3]
    for queue_id in (stored_only, removed_too):  # what move_queue does, up to a crash
        entry = directory.find(queue_id)
        claim = directory.lock(entry)
        assert db_queue.stage_import(queue_id, entry.state, claim.envelope, claim.message)
        if queue_id == removed_too:
            directory.remove(claim, entry.state)
        else:
            claim.release()
    # Meanwhile nothing of a half-moved message is visible to the database queue's senders,
    # and their clean-up of abandoned staged mail leaves it alone.
    assert {stored_only, removed_too}.isdisjoint(db_queue.due(flush=True))
    assert {stored_only, removed_too}.isdisjoint(e.queue_id for e in db_queue.entries())
    assert db_queue.cleanup(max_age=0, now=time.time() + 10) == []

    report = move_queue(MessageQueue(directory.path), db_queue)

    assert sorted(report.moved_ids) == sorted(expected)
    assert {m.queue_id for m in report.moved if m.resumed} == {stored_only, removed_too}
    assert untouched not in {m.queue_id for m in report.moved if m.resumed}
    assert {entry.queue_id: entry.state for entry in db_queue.entries()} == expected
    assert contents(db_queue) == before
    assert sorted(queue_id for queue_id, _ in table(postgres_url)) == sorted(expected)  # no staged row left
    assert list(directory.entries()) == []
    assert db_queue.pending_imports() == []


def test_clean_up_warns_of_a_move_left_unfinished_until_import_dir_runs_again(tmp_path, db_queue, caplog):
    directory = MessageQueue(tmp_path / "queue")
    queue_id = queue_one(directory, 1)
    entry = directory.find(queue_id)
    claim = directory.lock(entry)
    assert db_queue.stage_import(queue_id, entry.state, claim.envelope, claim.message)
    directory.remove(claim, entry.state)  # the crash comes here: the message is only in the database, unseen
    caplog.set_level("WARNING", logger="mq_transaction.database_queue")

    db_queue.cleanup(max_age=3600)  # a move in progress is not called interrupted
    assert caplog.records == []

    db_queue.cleanup(max_age=3600, now=time.time() + INTERRUPTED_IMPORT_AGE + 1)
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert f"1 message(s) (the first queue id {queue_id})" in record.getMessage()
    assert "mq-queue import-dir" in record.getMessage()
    assert db_queue.pending_imports() == [(queue_id, MessageState.QUEUED)]  # warned about, never removed

    caplog.clear()
    move_queue(MessageQueue(directory.path), db_queue)
    db_queue.cleanup(max_age=3600, now=time.time() + INTERRUPTED_IMPORT_AGE + 1)
    assert caplog.records == []
    assert [entry.queue_id for entry in db_queue.entries()] == [queue_id]


@pytest.mark.slow
def test_import_dir_killed_half_way_then_run_again_moves_each_message_exactly_once(tmp_path, db_queue, postgres_url):
    directory = MessageQueue(tmp_path / "queue", fsync=False)
    ids = [queue_one(directory, n) for n in range(300)]
    before = contents(directory)
    command = [*MQ_QUEUE, "--queue-url", postgres_url, "import-dir", directory.path]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for _ in range(60):
        assert first.stdout.readline().startswith("queue id ")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    first.stdout.close()
    assert 60 <= len(table(postgres_url)) < 300

    second = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)

    assert second.returncode == 0, second.stderr
    rows = table(postgres_url)
    assert [queue_id for queue_id, _ in rows] == sorted(ids)  # each once
    assert {state for _, state in rows} == {"queued"}  # none left staged
    assert contents(db_queue) == before
    assert list(directory.entries()) == []


def test_import_dir_without_a_database_queue_is_a_usage_error(tmp_path, capsys):
    directory = MessageQueue(tmp_path / "queue")
    assert mq_queue(["--queue-dir", str(tmp_path / "other"), "import-dir", directory.path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mq-queue: error: mq.queue_url: import-dir moves mail into a database queue")


def test_import_dir_of_a_missing_directory_is_a_usage_error_and_touches_no_database(tmp_path, postgres_url, capsys):
    assert mq_queue(["--queue-url", postgres_url, "import-dir", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mq-queue: error: ") and str(tmp_path / "absent") in err and err.count("\n") == 1


def test_import_dir_into_a_database_without_tables_says_to_run_init_db_and_moves_nothing(
    tmp_path, postgres_url, capsys
):
    directory = MessageQueue(tmp_path / "queue")
    queue_id = queue_one(directory, 1)
    assert mq_queue(["--queue-url", postgres_url, "import-dir", directory.path]) == 2
    assert "init-db" in capsys.readouterr().err
    assert [entry.queue_id for entry in directory.entries()] == [queue_id]
