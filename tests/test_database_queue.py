"""DatabaseQueue against a real PostgreSQL server: the queue contract, claims and leases, the schema."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa
from zope.interface.verify import verifyObject

from mq_transaction import ConfigurationError, CorruptMessageError, QueueWriteError, UnknownQueueIdError
from mq_transaction.database_queue import DatabaseQueue, mask_url, normalise_url
from mq_transaction.database_schema import SCHEMA_VERSION, ddl
from mq_transaction.interfaces import IMailQueue, IMailWatcher, ISessionMailQueue
from mq_transaction.queuefile import Attempt, Envelope
from mq_transaction.states import AttemptResult, MessageState, RecipientStatus

# Bytes a re-encoding would change: CRLF, a bare CR, 8-bit, a NUL, no final newline.
MESSAGE = b"From: app@example.com\r\nTo: bob@example.com\r\nSubject: caf\xc3\xa9\r\n\r\nline\rtwo\x00\xff"


def envelope(*recipients: str) -> Envelope:
    return Envelope.new("app@example.com", list(recipients or ["bob@example.com"]), time.time(), "<m@example.com>")


@pytest.fixture
def db_queue(postgres_url):
    queue = DatabaseQueue(postgres_url, claim_timeout=30)
    queue.init_db()
    yield queue
    queue.dispose()


@pytest.fixture
def other_sender(postgres_url):
    """A second queue object: another sender, as if on another host."""
    queue = DatabaseQueue(postgres_url, claim_timeout=30, host_name="other-host")
    yield queue
    queue.dispose()


def rows(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        result = [tuple(row) for row in connection.execute(sa.text(sql))]
    engine.dispose()
    return result


# -- the contract and the schema -------------------------------------------------------------


def test_database_queue_provides_the_queue_interface(db_queue):
    assert verifyObject(IMailQueue, db_queue)
    assert verifyObject(ISessionMailQueue, db_queue)  # what QueuedMailer(session=...) needs


def test_its_watcher_provides_the_watcher_interface(db_queue):
    read_fd, write_fd = os.pipe()
    watcher = db_queue.watch(read_fd, 1.0)
    try:
        assert verifyObject(IMailWatcher, watcher)
        assert watcher.mode == "listen"
    finally:
        watcher.close()
        os.close(read_fd)
        os.close(write_fd)


def test_init_db_is_idempotent_and_records_the_schema_version(postgres_url):
    queue = DatabaseQueue(postgres_url)
    assert queue.init_db() is True
    assert queue.init_db() is False
    queue.dispose()
    assert rows(postgres_url, "select version from mq_schema") == [(SCHEMA_VERSION,)]


def test_a_database_without_the_tables_is_refused_saying_to_run_init_db(postgres_url):
    queue = DatabaseQueue(postgres_url.replace("postgresql+psycopg://postgres@", "postgresql://postgres:s3cret@"))
    with pytest.raises(ConfigurationError) as caught:
        queue.check_schema()
    queue.dispose()
    assert caught.value.key == "mq.queue_url"
    assert "init-db" in str(caught.value)
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_a_database_with_another_schema_version_is_refused(db_queue, postgres_url):
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("update mq_schema set version = 99"))
    engine.dispose()
    fresh = DatabaseQueue(postgres_url)
    with pytest.raises(ConfigurationError, match="schema version 99.*needs version 1"):
        fresh.enqueue(envelope(), MESSAGE)
    fresh.dispose()


def test_the_printed_ddl_makes_the_same_tables_as_init_db(postgres_url):
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql(ddl())
    engine.dispose()
    queue = DatabaseQueue(postgres_url)
    queue.check_schema()
    assert queue.init_db() is False
    queue.enqueue(envelope(), MESSAGE)
    queue.dispose()
    indexes = rows(postgres_url, "select indexdef from pg_indexes where indexname = 'mq_messages_due'")
    assert "WHERE (state = ANY" in indexes[0][0]


def test_next_due_is_served_by_the_partial_index(db_queue, postgres_url):
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("set local enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in connection.exec_driver_sql(
                "explain select queue_id from mq_messages where state in ('queued', 'deferred') "
                "and due_at <= now() order by due_at limit 10"
            )
        )
    engine.dispose()
    assert "mq_messages_due" in plan


def test_urls_are_shown_with_the_password_masked():
    assert mask_url("postgresql://mail:hunter2@db.example.com/app") == "postgresql://mail:***@db.example.com/app"
    assert "hunter2" not in mask_url("postgresql://mail:hunter2@[not-a-url")
    assert normalise_url("postgresql://db/app").drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg2://db/app").drivername == "postgresql+psycopg2"


def test_a_url_of_another_database_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="mq.queue_url: .*not a PostgreSQL URL"):
        DatabaseQueue("sqlite:///x.db")


@pytest.mark.slow
def test_the_queue_on_its_own_connections_never_imports_sqlalchemy(db_queue, postgres_url):
    """A sender's queue runs on psycopg alone: SQLAlchemy's import was most of its start-up."""
    code = (
        "import sys, time, mq_transaction\n"
        "from mq_transaction import DatabaseQueue\n"
        "from mq_transaction.queuefile import Envelope\n"
        "assert 'sqlalchemy' not in sys.modules\n"
        "queue = DatabaseQueue(sys.argv[1])\n"
        "queue_id = queue.enqueue(Envelope.new('a@example.com', ['b@example.com'], time.time(), ''), b'x\\r\\n')\n"
        "queue.cleanup(3600); queue.recover_stale_claims(); assert queue_id in queue.due()\n"
        "[claim], problems = queue.claim_many([queue_id])\n"
        "queue.finish_deferred(claim, time.time() + 60)\n"
        "assert [entry.queue_id for entry in queue.entries()] == [queue_id] and queue.next_retry_time()\n"
        "[claim], problems = queue.claim_many(queue.due(flush=True))\n"
        "queue.finish_delivered(claim)\n"
        "queue.dispose()\n"
        "print(sorted(name for name in sys.modules if name.startswith('sqlalchemy')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, postgres_url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert db_queue.due(flush=True) == []


# -- the application's side --------------------------------------------------------------------


def test_enqueue_stores_the_exact_bytes_and_the_envelope(db_queue):
    queue_id = db_queue.enqueue(envelope("bob@example.com", "eve@example.com"), MESSAGE)
    entry = db_queue.find(queue_id)
    stored_envelope, stored = db_queue.read(entry)
    assert stored == MESSAGE
    assert [r.address for r in stored_envelope.recipients] == ["bob@example.com", "eve@example.com"]
    assert entry.state == MessageState.QUEUED
    assert entry.size > len(MESSAGE)
    assert db_queue.due() == [queue_id]


def test_a_staged_message_is_invisible_until_published(db_queue):
    queue_id = db_queue.stage(envelope(), MESSAGE)
    assert db_queue.due() == []
    assert list(db_queue.entries()) == []
    with pytest.raises(UnknownQueueIdError):
        db_queue.find(queue_id)
    assert db_queue.publish([queue_id]) == []
    assert db_queue.due() == [queue_id]


def test_discard_removes_staged_messages_but_never_published_ones(db_queue, postgres_url):
    staged = db_queue.stage(envelope(), MESSAGE)
    published = db_queue.enqueue(envelope(), MESSAGE)
    db_queue.discard([staged, published])
    assert rows(postgres_url, "select queue_id from mq_messages") == [(published,)]


def test_publishing_a_message_no_longer_staged_is_reported_not_raised(db_queue):
    queue_id = db_queue.stage(envelope(), MESSAGE)
    db_queue.discard([queue_id])
    problems = db_queue.publish([queue_id])
    assert [queue_id for queue_id, _problem in problems] == [queue_id]


def test_cleanup_removes_only_old_staged_messages(db_queue):
    old = db_queue.stage(envelope(), MESSAGE)
    queued = db_queue.enqueue(envelope(), MESSAGE)
    assert db_queue.cleanup(3600) == []
    assert db_queue.cleanup(3600, now=time.time() + 7200) == [old]
    assert db_queue.due() == [queued]


def test_check_writable_passes_for_a_user_who_may_write(db_queue):
    db_queue.check_writable()


def test_a_database_that_cannot_be_reached_is_a_queue_write_error():
    queue = DatabaseQueue("postgresql://nobody:pw@127.0.0.1:1/nothing")
    with pytest.raises(QueueWriteError, match="127.0.0.1:1"):
        queue.enqueue(envelope(), MESSAGE)
    queue.dispose()


# -- the sender's side ---------------------------------------------------------------------------


def test_a_claimed_message_cannot_be_claimed_by_another_sender(db_queue, other_sender):
    queue_id = db_queue.enqueue(envelope(), MESSAGE)
    claim = db_queue.claim(queue_id)
    assert claim is not None and claim.message == MESSAGE
    assert other_sender.claim(queue_id) is None
    assert other_sender.due() == []
    assert db_queue.find(queue_id).state == MessageState.SENDING
    db_queue.finish_delivered(claim)
    with pytest.raises(UnknownQueueIdError):
        db_queue.find(queue_id)


def test_a_row_locked_by_a_claim_in_progress_is_skipped_not_waited_for(db_queue, other_sender, postgres_url):
    queue_id = db_queue.enqueue(envelope(), MESSAGE)
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("select 1 from mq_messages where queue_id = :id for update"), {"id": queue_id})
        started = time.monotonic()
        assert other_sender.claim(queue_id) is None
        assert time.monotonic() - started < 5
    engine.dispose()
    assert other_sender.claim(queue_id) is not None


def test_claim_many_claims_the_free_listed_messages_in_one_statement_in_their_order(db_queue, other_sender):
    ids = [db_queue.enqueue(envelope(), MESSAGE) for _ in range(5)]
    held = other_sender.claim(ids[1])
    statements = []  # the claim is one statement
    run = db_queue._db.run
    db_queue._db.run = lambda *args, **kwargs: statements.append(args[0]) or run(*args, **kwargs)
    claims, problems = db_queue.claim_many([*reversed(ids), "20261128T151136123456Z-9f3a2b1c0d"])
    assert len(statements) == 1 and statements[0].startswith("UPDATE mq_messages SET state = 'sending'")
    assert [claim.queue_id for claim in claims] == [ids[4], ids[3], ids[2], ids[0]]
    assert problems == [] and all(claim.message == MESSAGE for claim in claims)
    assert other_sender.claim_many(ids) == ([], [])  # all held: by the one or the other
    for claim in claims:
        db_queue.finish_delivered(claim)
    other_sender.finish_delivered(held)
    assert db_queue.due(flush=True) == []


def test_the_senders_statements_work_through_psycopg2_too(postgres_url):
    """They run through the driver's own cursor: the other driver's adaptation (a list to
    an array, bytea to memoryview) gives the same claims and states."""
    queue = DatabaseQueue(postgres_url.replace("+psycopg:", "+psycopg2:"), claim_timeout=30)
    try:
        assert queue.engine is not None and queue.engine.dialect.driver == "psycopg2"
        queue.init_db()
        ids = [queue.enqueue(envelope(), MESSAGE) for _ in range(3)]
        claims, problems = queue.claim_many(ids)
        assert [(claim.queue_id, claim.message) for claim in claims] == [(queue_id, MESSAGE) for queue_id in ids]
        assert problems == []
        queue.finish_deferred(claims[0], time.time() + 600)
        queue.finish_failed(claims[1])
        queue.finish_delivered(claims[2])
        assert [(entry.queue_id, entry.state) for entry in queue.entries()] == [
            (ids[0], MessageState.DEFERRED),
            (ids[1], MessageState.FAILED),
        ]
    finally:
        queue.dispose()


def test_senders_claiming_the_same_ids_at_once_never_get_the_same_message(postgres_url):
    senders = [DatabaseQueue(postgres_url, claim_timeout=30, host_name=f"host-{n}") for n in range(4)]
    senders[0].init_db()
    ids = [senders[0].enqueue(envelope(), MESSAGE) for _ in range(300)]
    start = threading.Barrier(len(senders))
    got: list[list[str]] = [[] for _ in senders]

    def claim_all(number: int) -> None:
        start.wait()
        for first in range(0, len(ids), 10):  # the same batches, in the same order, at the same time
            got[number] += [claim.queue_id for claim in senders[number].claim_many(ids[first : first + 10])[0]]

    threads = [threading.Thread(target=claim_all, args=(number,)) for number in range(len(senders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everyone = [queue_id for mine in got for queue_id in mine]
    assert sorted(everyone) == sorted(ids)  # each message claimed once, by one sender
    owners = dict(rows(postgres_url, "select queue_id, lease_owner from mq_messages"))
    for sender, mine in zip(senders, got, strict=True):
        assert {owners[queue_id] for queue_id in mine} <= {sender.lease_owner}
        sender.dispose()


def test_a_corrupt_message_in_a_batch_goes_to_corrupt_and_the_others_are_claimed(db_queue, postgres_url):
    ids = [db_queue.enqueue(envelope(), MESSAGE) for _ in range(3)]
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(
            sa.text("""update mq_messages set envelope = '{"sender": 1}' where queue_id = :id"""), {"id": ids[1]}
        )
    engine.dispose()
    claims, problems = db_queue.claim_many(ids)
    assert [claim.queue_id for claim in claims] == [ids[0], ids[2]]
    assert len(problems) == 1 and isinstance(problems[0], CorruptMessageError) and ids[1] in str(problems[0])
    assert db_queue.find(ids[1]).state == MessageState.CORRUPT
    assert [db_queue.find(queue_id).state for queue_id in (ids[0], ids[2])] == [MessageState.SENDING] * 2


def test_deferred_message_keeps_its_recipients_and_is_due_at_its_time(db_queue):
    queue_id = db_queue.enqueue(envelope("bob@example.com", "eve@example.com"), MESSAGE)
    claim = db_queue.claim(queue_id)
    claim.envelope.recipients[0].status = RecipientStatus.DELIVERED
    claim.envelope.recipients[0].reply = "250 ok"
    claim.envelope.recipients[1].status = RecipientStatus.DEFERRED
    claim.envelope.attempts.append(Attempt(1, time.time(), "mx:25", {}, AttemptResult.DEFERRED))
    next_attempt = time.time() + 600
    db_queue.finish_deferred(claim, next_attempt)
    entry = db_queue.find(queue_id)
    assert entry.state == MessageState.DEFERRED
    assert entry.next_attempt == pytest.approx(next_attempt, abs=0.01)
    assert db_queue.next_retry_time() == pytest.approx(next_attempt, abs=0.01)
    assert db_queue.due() == []
    assert db_queue.due(flush=True) == [queue_id]
    assert db_queue.due(now=next_attempt + 1) == [queue_id]
    stored, message = db_queue.read(entry)
    assert [r.status for r in stored.recipients] == ["delivered", "deferred"]
    assert [(a.number, a.server, a.result) for a in stored.attempts] == [(1, "mx:25", "deferred")]
    assert message == MESSAGE


def test_failed_message_stays_with_its_envelope(db_queue):
    queue_id = db_queue.enqueue(envelope(), MESSAGE)
    claim = db_queue.claim(queue_id)
    claim.envelope.recipients[0].status = RecipientStatus.FAILED
    claim.envelope.failure_reason = "rejected"
    db_queue.finish_failed(claim)
    entry = db_queue.find(queue_id)
    assert entry.state == MessageState.FAILED
    assert db_queue.read(entry)[0].failure_reason == "rejected"
    assert db_queue.due(flush=True) == []


def test_unclaim_gives_the_message_back_due_at_once(db_queue, other_sender):
    queue_id = db_queue.enqueue(envelope(), MESSAGE)
    db_queue.unclaim(db_queue.claim(queue_id))
    assert other_sender.due() == [queue_id]
    assert other_sender.claim(queue_id) is not None


@pytest.mark.slow
def test_a_dead_senders_claim_goes_back_to_the_queue_once_its_lease_ran_out(postgres_url, other_sender):
    dying = DatabaseQueue(postgres_url, claim_timeout=1)
    dying.init_db()
    queue_id = dying.enqueue(envelope(), MESSAGE)
    assert dying.claim(queue_id) is not None
    dying._keeper.stop()  # the sender "dies": nobody renews its lease
    assert other_sender.recover_stale_claims() == []
    time.sleep(1.5)
    assert other_sender.recover_stale_claims() == [queue_id]
    claim = other_sender.claim(queue_id)
    assert claim is not None
    # The dead sender's late result is not recorded over the new claim.
    dying.finish_delivered(dying_claim := type(claim)(queue_id, claim.envelope, MESSAGE))
    assert dying_claim.queue is None
    assert other_sender.find(queue_id).state == MessageState.SENDING
    other_sender.finish_delivered(claim)
    dying.dispose()


@pytest.mark.slow
def test_a_live_senders_long_delivery_keeps_its_claim(postgres_url, other_sender):
    slow = DatabaseQueue(postgres_url, claim_timeout=1)
    slow.init_db()
    queue_id = slow.enqueue(envelope(), MESSAGE)
    claim = slow.claim(queue_id)
    time.sleep(2.5)  # over twice the claim timeout: the keeper renews it meanwhile
    assert other_sender.recover_stale_claims() == []
    assert other_sender.claim(queue_id) is None
    slow.finish_delivered(claim)
    assert other_sender.due() == []
    slow.dispose()


def test_a_message_whose_envelope_cannot_be_decoded_moves_to_corrupt(db_queue, postgres_url):
    queue_id = db_queue.enqueue(envelope(), MESSAGE)
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("""update mq_messages set envelope = '{"sender": 1}'"""))
    engine.dispose()
    with pytest.raises(CorruptMessageError, match=queue_id):
        db_queue.claim(queue_id)
    assert db_queue.find(queue_id).state == MessageState.CORRUPT


# -- the operator's side ----------------------------------------------------------------------


def test_operator_lock_holds_off_senders_and_moves_the_message(db_queue, other_sender):
    queue_id = db_queue.enqueue(envelope(), MESSAGE)
    lock = db_queue.lock(db_queue.find(queue_id))
    assert lock is not None
    assert other_sender.claim(queue_id) is None
    assert other_sender.lock(other_sender.find(queue_id)) is None
    db_queue.move(lock, MessageState.QUEUED, MessageState.HELD)
    assert [(e.queue_id, e.state) for e in db_queue.entries()] == [(queue_id, MessageState.HELD)]
    assert other_sender.due(flush=True) == []
    lock = db_queue.lock(db_queue.find(queue_id))
    db_queue.move(lock, MessageState.HELD, MessageState.QUEUED)
    assert other_sender.due() == [queue_id]
    lock = db_queue.lock(db_queue.find(queue_id))
    db_queue.remove(lock, MessageState.QUEUED)
    assert list(db_queue.entries()) == []


def test_entries_list_states_in_order_then_oldest_first(db_queue):
    first = db_queue.enqueue(envelope(), MESSAGE)
    second = db_queue.enqueue(envelope(), MESSAGE)
    claim = db_queue.claim(first)
    db_queue.finish_failed(claim)
    listed = [(e.queue_id, e.state) for e in db_queue.entries()]
    assert listed == [(second, MessageState.QUEUED), (first, MessageState.FAILED)]
    assert [e.queue_id for e in db_queue.entries(MessageState.FAILED)] == [first]
    assert db_queue.read_raw(db_queue.find(first)).endswith(b"\n" + MESSAGE)


# -- the daemon's side --------------------------------------------------------------------------


def test_the_watcher_wakes_when_mail_commits(db_queue, other_sender):
    read_fd, write_fd = os.pipe()
    watcher = other_sender.watch(read_fd, 30.0)
    try:
        watcher.wait(0)  # nothing pending
        other_sender.daemon_lock()  # no lock: several daemons are the point
        db_queue.enqueue(envelope(), MESSAGE)
        started = time.monotonic()
        watcher.wait(20)
        assert time.monotonic() - started < 10
    finally:
        watcher.close()
        watcher.close()
        os.close(read_fd)
        os.close(write_fd)


def test_the_watcher_wakes_on_its_wake_descriptor(db_queue):
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    watcher = db_queue.watch(read_fd, 30.0)
    try:
        os.write(write_fd, b"x")
        started = time.monotonic()
        watcher.wait(20)
        assert time.monotonic() - started < 10
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 1)  # drained
    finally:
        watcher.close()
        os.close(read_fd)
        os.close(write_fd)


def test_the_urls_own_options_hold_for_every_statement(postgres_url):
    """A URL's ``options`` (here a search_path) reach every connection, the claims' too
    (which add ``synchronous_commit=off`` of their own): all see the same tables."""
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("create schema mail")
    engine.dispose()
    url = postgres_url + "?options=-csearch_path%3Dmail"
    queue = DatabaseQueue(url, claim_timeout=30)
    try:
        queue.init_db()
        queue_id = queue.enqueue(envelope(), MESSAGE)
        [claim], problems = queue.claim_many([queue_id])
        assert problems == [] and claim.message == MESSAGE
        queue.finish_delivered(claim)
        assert queue.due(flush=True) == []
    finally:
        queue.dispose()
    assert rows(
        postgres_url, "select table_schema from information_schema.tables where table_name = 'mq_messages'"
    ) == [("mail",)]


def test_a_queue_on_the_apps_engine_leaves_its_connections_as_they_were(postgres_url):
    """``DatabaseQueue(engine)`` runs through SQLAlchemy on the app's pool: its statements
    in autocommit, the app's own connections still in transactions afterwards."""
    engine = sa.create_engine(postgres_url, pool_size=1, max_overflow=0)
    queue = DatabaseQueue(engine, claim_timeout=30)
    try:
        assert queue.engine is engine
        queue.init_db()
        queue_id = queue.enqueue(envelope(), MESSAGE)
        [claim], problems = queue.claim_many(queue.due())
        assert problems == [] and claim.queue_id == queue_id and claim.message == MESSAGE
        queue.finish_deferred(claim, time.time() + 600)
        assert [(entry.queue_id, entry.state) for entry in queue.entries()] == [(queue_id, MessageState.DEFERRED)]
        with engine.connect() as connection:  # the pool's one connection, the queue's before
            connection.exec_driver_sql("create temporary table app_scratch (n int)")
            connection.rollback()
            assert not sa.inspect(connection).has_table("app_scratch")  # rolled back: not autocommit
    finally:
        queue.dispose()
        engine.dispose()
