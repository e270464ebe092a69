"""The PostgreSQL queue: the mail outbox in the application's own database.

``DatabaseQueue(url_or_engine)`` implements :class:`~mq_transaction.interfaces.IMailQueue`
over the tables of :mod:`mq_transaction.database_schema`, so everything above the queue
(the mailer, the sender, the daemon, ``mq-queue``) is the code the directory queue uses.
Its statements (:mod:`mq_transaction.database_sql`) run on the queue's own psycopg 3
connections, without SQLAlchemy, or through SQLAlchemy on an application's engine or
session connection, whatever its driver (:mod:`mq_transaction.database_connections`).

Two ways to queue:

- **Same transaction as the app** (recommended): ``QueuedMailer(queue, session=Session)``
  inserts each message through the app's session connection with :meth:`DatabaseQueue.insert`,
  so the mail row commits or rolls back with the app's rows in one database commit.
- **Own connection**: ``stage`` inserts a ``staged`` row on the queue's own connection
  (committed at once, invisible to senders), the data manager ``publish``-es it after
  the app's database committed, exactly as the directory queue renames ``tmp/`` into
  ``new/``.

Senders on any number of hosts claim messages with ``SELECT ... FOR UPDATE SKIP LOCKED``
in a short transaction that records a lease (``lease_owner``: host name, PID and a token;
``lease_until``: the database's ``now()`` plus ``claim_timeout``). No row lock is held
during the SMTP dialog; a thread renews the leases of the claims this process holds. A
sender that dies stops renewing: once its lease has run out, ``recover_stale_claims``
(run by every sender) puts the message back in ``queued``.
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zope.interface import implementer

from . import database_sql as sql
from .database_connections import ConnectionCut, Connections, DriverConnections, first_line
from .database_leases import LeaseKeeper
from .database_sql import IMPORT_OWNER, STAGED
from .database_url import CONNECT_TIMEOUT, mask_url, normalise_url
from .database_watcher import NotificationWatcher
from .errors import (
    ConfigurationError,
    CorruptMessageError,
    MailQueueError,
    QueueUnavailableError,
    QueueWriteError,
    UnknownQueueIdError,
)
from .interfaces import ISessionMailQueue
from .queue_ids import is_queue_id, new_queue_id
from .queuefile import Envelope
from .records import Claim, Entry
from .states import STATES, MessageState

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["CONNECT_TIMEOUT", "DatabaseClaim", "DatabaseQueue", "NotificationWatcher", "mask_url", "normalise_url"]

log = logging.getLogger("mq_transaction.database_queue")

#: how long a message stays half moved by a running ``import-dir`` (milliseconds, in
#: fact) before clean-up calls the move interrupted and warns about it
INTERRUPTED_IMPORT_AGE = 600.0

#: The default lease of a claim (``mq.claim_timeout``), in seconds.
DEFAULT_CLAIM_TIMEOUT = 300.0

_QUEUED, _DEFERRED, _SENDING = MessageState.QUEUED.value, MessageState.DEFERRED.value, MessageState.SENDING.value
_FAILED = MessageState.FAILED.value


#: Every DatabaseQueue of this process, so that a forked child drops the connections it inherited.
_QUEUES: weakref.WeakSet[DatabaseQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_QUEUES):
        queue._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)


def _unix(moment: datetime.datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _is_engine(value: Any) -> bool:
    """True for an SQLAlchemy engine (never importing SQLAlchemy to say so)."""
    return type(value).__module__.startswith("sqlalchemy.") and hasattr(value, "raw_connection")


@dataclass
class DatabaseClaim(Claim):
    """A message this process holds by its lease in the database."""

    queue: DatabaseQueue | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Let go of the lease at once (the message stays in its state); idempotent."""
        queue, self.queue = self.queue, None
        if queue is not None:
            queue._release(self)


@implementer(ISessionMailQueue)
class DatabaseQueue:
    """A mail queue in PostgreSQL tables (``mq-queue init-db`` creates them).

    ``url_or_engine`` is an SQLAlchemy URL (``postgresql://``, ``postgresql+psycopg://``,
    ``postgresql+psycopg2://``) or an :class:`sqlalchemy.Engine`. ``claim_timeout`` is
    how long a sender's claim lasts without renewal (``mq.claim_timeout``): a sender that
    dies holds its message that long at most. The schema version is checked on first use
    (or by :meth:`check_schema`), never at construction, so making the object needs no
    database. A URL of the default driver (psycopg 3) needs no SQLAlchemy: the queue
    then runs on connections of its own.
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | sa.Engine,
        *,
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
        host_name: str | None = None,
    ) -> None:
        self._db: Connections
        try:
            if _is_engine(url_or_engine):
                from .database_engine import EngineConnections

                self._db = EngineConnections(url_or_engine, owned=False)  # type: ignore[arg-type]
            else:
                url = normalise_url(url_or_engine)
                if url.driver == "psycopg":
                    self._db = DriverConnections(url)
                else:
                    from .database_engine import EngineConnections

                    self._db = EngineConnections.from_url(url)
        except ImportError as exc:
            raise sql.missing_extra(exc) from None
        if claim_timeout <= 0:
            raise ConfigurationError("mq.claim_timeout", f"{claim_timeout!r} must be a positive number of seconds")
        self.claim_timeout = float(claim_timeout)
        self._host_name = host_name or socket.gethostname()
        #: Who holds this process's claims, as ``mq-queue`` shows it: host, PID, token.
        self.lease_owner = f"{self._host_name}:{os.getpid()}:{secrets.token_hex(3)}"
        self._schema_checked = False
        self._checked_engines: weakref.WeakSet[Any] = weakref.WeakSet()
        self._keeper: LeaseKeeper | None = None
        self._keeper_lock = threading.Lock()
        _QUEUES.add(self)

    @property
    def location(self) -> str:
        """The database URL with its password masked."""
        return self._db.location

    @property
    def url(self) -> str:
        """The database URL, password included: for a driver or an engine, never for a log
        (:attr:`location` masks it)."""
        return self._db.url

    @property
    def engine(self) -> sa.Engine | None:
        """The SQLAlchemy engine the queue runs on, or None on connections of its own."""
        return getattr(self._db, "engine", None)

    def __repr__(self) -> str:
        return f"DatabaseQueue({self.location!r})"

    # -- connections and errors ----------------------------------------------------------

    def _run(
        self,
        statement: str,
        params: dict[str, Any] | None = None,
        *,
        doing: str,
        durable: bool = True,
        again_if_cut: bool = False,
    ) -> tuple[int, list[Any]]:
        """One statement in autocommit (after the schema check, once); its row count and rows.

        A pooled connection found cut (a restart or a fail-over cuts every connection the
        pool holds) empties the pool, so the next statement connects afresh instead of
        meeting the next dead connection. With ``again_if_cut``, for a statement that may
        safely run twice, it is then tried once more on a new connection.
        """
        if not self._schema_checked:
            self.check_schema()
        try:
            return self._db.run(statement, params, doing=doing, durable=durable)
        except ConnectionCut:
            if not again_if_cut:
                raise
        return self._db.run(statement, params, doing=doing, durable=durable)

    def _transaction(self, doing: str) -> Any:
        """A short transaction (after the schema check, once), yielding ``Statements``."""
        if not self._schema_checked:
            self.check_schema()
        return self._db.transaction(doing)

    def check_schema(self) -> None:
        """Raise :class:`ConfigurationError` unless the tables exist in this code's version
        (saying to run ``init-db``); :class:`QueueUnavailableError` when the database
        cannot be reached."""
        try:
            with self._db.transaction("checking the mail queue tables") as statements:
                if len(statements.run(sql.TABLES_PRESENT)[1]) != 2:
                    raise sql.missing_tables(self.location)
                _count, rows = statements.run(sql.SCHEMA_VERSIONS)
        except QueueUnavailableError as exc:
            raise self._cannot_connect(exc) from exc
        versions = [row[0] for row in rows]
        if versions != [sql.SCHEMA_VERSION]:
            raise sql.wrong_version(versions[0] if len(versions) == 1 else versions, f" in {self.location}")
        self._schema_checked = True

    def init_db(self) -> bool:
        """Create the tables unless they exist (``mq-queue init-db``); True if created.

        Idempotent, and safe when several processes run it at once (an advisory lock
        serialises them). Raises :class:`QueueUnavailableError` when the database cannot
        be reached, :class:`QueueWriteError` saying what the database answered when it
        refuses (no permission to create tables), and :class:`ConfigurationError` when it
        holds another schema version.
        """
        try:
            from .database_schema import create_statements  # the DDL is made by SQLAlchemy
        except ImportError as exc:
            raise sql.missing_extra(exc) from None

        try:
            with self._db.transaction("creating the mail queue tables") as statements:
                statements.run(sql.INIT_LOCK)
                present = {row[0] for row in statements.run(sql.TABLES_PRESENT)[1]}
                created = sql.MESSAGES not in present
                for table, ddl in create_statements().items():
                    if table not in present:
                        for statement in ddl:
                            statements.run(statement)
                versions = [row[0] for row in statements.run(sql.SCHEMA_VERSIONS)[1]]
                if not versions:
                    statements.run(sql.RECORD_SCHEMA_VERSION)
                elif versions[0] != sql.SCHEMA_VERSION:
                    raise sql.wrong_version(versions[0], "")
        except QueueUnavailableError as exc:
            raise self._cannot_connect(exc) from exc
        except self._db.database_errors as exc:
            raise QueueWriteError(f"cannot create the mail queue tables in {self.location}: {_refusal(exc)}") from exc
        self._schema_checked = True
        return created

    def _cannot_connect(self, exc: QueueUnavailableError) -> QueueUnavailableError:
        """The schema check's and ``init-db``'s wording of connection trouble."""
        return QueueUnavailableError(
            f"cannot connect to the queue database {self.location}: {_refusal(exc.__cause__ or exc)}"
        )

    def _after_fork_in_child(self) -> None:
        """A forked process (a pre-fork web server's worker) starts with no connection.

        The pooled connections it inherited are the parent's: using one from two
        processes mixes their conversations with the server, so they are dropped
        unclosed (the parent keeps using them). The child claims under an owner of its own
        and renews no lease of the parent's.
        """
        self._db.after_fork_in_child()
        self.lease_owner = f"{self._host_name}:{os.getpid()}:{secrets.token_hex(3)}"
        self._keeper = None
        self._keeper_lock = threading.Lock()

    def dispose(self) -> None:
        """Stop renewing leases and close the pooled connections."""
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        self._db.dispose()

    # -- the application's side ------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise unless this process can insert into the queue table (checks the schema too)."""
        try:
            _count, rows = self._run(sql.MAY_WRITE, doing="checking it can be written")
        except QueueUnavailableError as exc:
            raise QueueWriteError(str(exc)) from exc
        if not rows[0][0]:
            raise QueueWriteError(
                f"the database user of {self.location} may not insert, update and delete rows of {sql.MESSAGES}"
            )

    def insert(self, connection: sa.Connection, envelope: Envelope, message: bytes) -> str:
        """Queue a message on ``connection`` (the app's, in its transaction); return its id.

        The row is ``queued`` and a ``NOTIFY`` wakes the daemons, both only when that
        transaction commits: this is the same-transaction mode.
        """
        queue_id = new_queue_id(envelope.queued_at)
        connection.exec_driver_sql(sql.INSERT_AND_NOTIFY, _row(queue_id, _QUEUED, envelope, message))
        return queue_id

    def insert_in_session(self, session: Any, envelope: Envelope, message: bytes, transaction_manager: Any) -> str:
        """Queue a message through ``session``'s connection, in its database transaction.

        ``session`` is the app's SQLAlchemy ``Session`` (or ``scoped_session``) joined to
        ``transaction_manager`` by zope.sqlalchemy. The session is marked changed, so
        zope.sqlalchemy commits it even when the app wrote nothing else. The first time a
        database is seen, it must be this queue's database: a session bound elsewhere is
        refused with :class:`ConfigurationError` (never two separate commits).
        """
        import sqlalchemy.orm  # here: a sender never needs the ORM, whose import costs 0.1 s of its start-up
        import zope.sqlalchemy  # type: ignore[import-untyped]  # no type hints shipped

        if isinstance(session, sqlalchemy.orm.scoped_session):
            session = session()
        connection = session.connection()
        if connection.engine not in self._checked_engines:
            if not self.same_database(connection):
                raise ConfigurationError(
                    "mq.queue_session",
                    f"the session's database {mask_url(connection.engine.url)} is not the queue's database "
                    f"{self.location}: the mail would not commit with the app's rows; bind the session to the "
                    "queue's database or drop session=",
                )
            self._checked_engines.add(connection.engine)
        queue_id = self.insert(connection, envelope, message)
        zope.sqlalchemy.mark_changed(session, transaction_manager=transaction_manager)
        return queue_id

    def same_database(self, connection: sa.Connection) -> bool:
        """True when ``connection`` talks to this queue's database (same server, same database)."""
        _count, mine = self._db.run(sql.IDENTITY, doing="checking the session's database")
        return tuple(connection.exec_driver_sql(sql.IDENTITY).one()) == tuple(mine[0])

    def stage(self, envelope: Envelope, message: bytes) -> str:
        """Insert a ``staged`` row, committed at once on the queue's own connection; return its id."""
        queue_id = new_queue_id(envelope.queued_at)
        try:
            self._run(sql.INSERT, _row(queue_id, STAGED, envelope, message), doing=f"staging queue id {queue_id}")
        except QueueUnavailableError as exc:
            raise QueueWriteError(str(exc)) from exc
        return queue_id

    def publish(self, queue_ids: list[str]) -> list[tuple[str, str]]:
        """Turn staged rows into ``queued`` and NOTIFY, in one commit; never raises.

        Tried three times over about a second (a database restart), then each message
        is reported with the SQL that sends it by hand.
        """
        if not queue_ids:
            return []
        problem = ""
        for pause in (0.2, 0.8, None):
            try:
                with self._transaction("publishing committed mail") as statements:
                    published = {row[0] for row in statements.run(sql.PUBLISH, {"queue_ids": list(queue_ids)})[1]}
                    statements.run(sql.NOTIFY)
                missing = [queue_id for queue_id in queue_ids if queue_id not in published]
                return [
                    (queue_id, f"queue id {queue_id} was no longer staged in {self.location}") for queue_id in missing
                ]
            except Exception as exc:  # noqa: BLE001 - publish never raises (it runs in tpc_finish)
                problem = str(exc)
            if pause is not None:
                time.sleep(pause)
        return [
            (
                queue_id,
                f"{problem}; the message is staged in table {sql.MESSAGES} of {self.location}: to send it, run "
                f"UPDATE {sql.MESSAGES} SET state = 'queued', due_at = now() WHERE queue_id = '{queue_id}'",
            )
            for queue_id in queue_ids
        ]

    def discard(self, queue_ids: list[str]) -> None:
        """Delete staged rows (the abort); published ones are never touched."""
        if not queue_ids:
            return
        self._run(sql.DISCARD, {"queue_ids": list(queue_ids)}, doing="discarding aborted mail")

    def enqueue(self, envelope: Envelope, message: bytes) -> str:
        """Queue a message at once, in a transaction of its own; return its id."""
        queue_id = new_queue_id(envelope.queued_at)
        try:
            self._run(sql.INSERT_AND_NOTIFY, _row(queue_id, _QUEUED, envelope, message), doing="queueing a message")
        except QueueUnavailableError as exc:
            raise QueueWriteError(str(exc)) from exc
        return queue_id

    def cleanup(self, max_age: float, now: float | None = None) -> list[str]:
        """Delete staged rows older than ``max_age`` seconds (their process died mid-request)."""
        now = time.time() if now is None else now
        _count, rows = self._run(sql.CLEAN_UP, {"before": _utc(now - max_age)}, doing="removing abandoned staged mail")
        removed = [row[0] for row in rows]
        for queue_id in removed:
            log.info("removed staged queue id %s (older than %.0fs; its transaction never ended)", queue_id, max_age)
        self._warn_of_interrupted_imports(now)
        return removed

    def _warn_of_interrupted_imports(self, now: float) -> None:
        """Say, at every clean-up, that messages wait for an interrupted ``import-dir`` to be
        run again: nothing else ever makes them visible, and no sender sees them until then."""
        _count, rows = self._run(
            sql.INTERRUPTED_IMPORTS,
            {"before": _utc(now - INTERRUPTED_IMPORT_AGE)},
            doing="looking for interrupted moves",
        )
        waiting = rows[0]
        if waiting[0]:
            log.warning(
                "%d message(s) (the first queue id %s) were half moved in by an `mq-queue import-dir` that did "
                "not finish; no sender sees them until it is run again on the same directory, which finishes "
                "the move without a second copy",
                waiting[0],
                waiting[1],
            )

    # -- the sender's side -----------------------------------------------------------------

    def recover_stale_claims(self) -> list[str]:
        """Put messages whose sender's lease ran out back in ``queued``; return their ids."""
        _count, rows = self._run(sql.RECOVER_STALE_CLAIMS, doing="recovering dead senders' claims")
        recovered = [row[0] for row in rows]
        for queue_id in recovered:
            log.warning("queue id %s: its sender's lease ran out (the sender died?); back in the queue", queue_id)
        return recovered

    def due(self, now: float | None = None, flush: bool = False) -> list[str]:
        """Ids of the queued messages and the deferred ones due at ``now`` (all with ``flush``).

        Oldest first, while no other sender is at work. While others are (they hold leases),
        the list starts at a random place and wraps around, so that concurrent senders
        claim different messages instead of racing for the same ones in the same order.
        """
        now = time.time() if now is None else now
        doing = "listing due mail"
        if flush:
            ids = [row[0] for row in self._run(sql.DUE_ALL, doing=doing)[1]]
        else:
            ids = [row[0] for row in self._run(sql.DUE, {"now": _utc(now)}, doing=doing)[1]]
        others = self._run(sql.OTHER_SENDERS, {"owner": self.lease_owner}, doing=doing)[1]
        if others and len(ids) > 1:
            start = secrets.randbelow(len(ids))
            ids = ids[start:] + ids[:start]
        return ids

    def next_retry_time(self) -> float | None:
        """The earliest next attempt time of a deferred message, or None."""
        _count, rows = self._run(sql.NEXT_RETRY, doing="reading the retry schedule")
        return _unix(rows[0][0])

    def claim(self, queue_id: str) -> DatabaseClaim | None:
        """Claim a queued or deferred message with a lease; None when gone or held elsewhere."""
        claims, problems = self.claim_many([queue_id])
        if problems:
            raise problems[0]
        return claims[0] if claims else None

    #: Messages a sender claims in one statement (``IMailQueue.claim_batch_size``): one round
    #: trip and one lease write serve them all (bench/README.md, "PostgreSQL drain").
    claim_batch_size = 10

    def claim_many(self, queue_ids: list[str]) -> tuple[list[DatabaseClaim], list[MailQueueError]]:
        """Claim every listed message still due and free, in one statement; see ``IMailQueue``.

        ``UPDATE ... WHERE queue_id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``: one
        round trip for the lot, and a row that another sender holds, or took since it was
        listed, is skipped (its lease, or its row lock while that sender's claim runs).
        Claims need not wait for the WAL flush: the durable record of a delivery (a
        synchronous commit) flushes them with it. A claim lost in a crash of the database
        server puts the message back in queued, as a dead sender's does.
        """
        if not queue_ids:
            return [], []
        doing = f"claiming queue id {queue_ids[0]} and {len(queue_ids) - 1} more"
        # Tried again on a new connection if its pooled one was cut (the first claim after a
        # database restart): a row claimed just before the cut is leased to this sender, so
        # the second try skips it (it goes back to queued when the lease runs out) and no
        # message is ever claimed twice.
        _count, rows = self._run(
            sql.CLAIM,
            {"queue_ids": list(queue_ids), **self._lease_params()},
            doing=doing,
            durable=False,
            again_if_cut=True,
        )
        found = {row[0]: row for row in rows}
        claims: list[DatabaseClaim] = []
        problems: list[MailQueueError] = []
        try:
            for queue_id in queue_ids:
                row = found.get(queue_id)
                if row is None:
                    continue
                try:
                    envelope = Envelope.from_json(row[1].encode())
                except CorruptMessageError as exc:
                    self._move_to_corrupt(queue_id)
                    problems.append(CorruptMessageError(f"queue id {queue_id}: {exc}; moved to corrupt"))
                    continue
                claim = DatabaseClaim(queue_id, envelope, bytes(row[2]), queue=self)
                self._keep(claim)
                claims.append(claim)
        except BaseException:
            for claim in claims:  # the next run recovers them at once
                claim.release()
            raise
        return claims, problems

    def _move_to_corrupt(self, queue_id: str) -> None:
        self._run(sql.TO_CORRUPT, {"queue_id": queue_id}, doing=f"moving queue id {queue_id} to corrupt")

    def finish_delivered(self, claim: Claim) -> None:
        """Delete the delivered message's row (if this process still holds its lease)."""
        self._finish(claim, "recording its delivery", sql.DELETE_CLAIMED, {})

    def finish_deferred(self, claim: Claim, next_attempt: float) -> None:
        """Store the envelope and defer the message until ``next_attempt``."""
        claim.envelope.next_attempt = next_attempt
        self._finish(
            claim,
            "deferring it",
            sql.SETTLE_CLAIMED,
            {"new_state": _DEFERRED, "due_at": _utc(next_attempt), "envelope_json": claim.envelope.to_json().decode()},
        )

    def finish_failed(self, claim: Claim) -> None:
        """Store the envelope and move the message to ``failed``."""
        claim.envelope.next_attempt = None
        self._finish(
            claim,
            "recording its failure",
            sql.SETTLE_CLAIMED,
            {"new_state": _FAILED, "due_at": None, "envelope_json": claim.envelope.to_json().decode()},
        )

    def unclaim(self, claim: Claim, envelope_changed: bool = False) -> None:
        """Give the message back to ``queued``, due at once."""
        envelope_json = claim.envelope.to_json().decode() if envelope_changed else None
        self._finish(claim, "giving it back", sql.REQUEUE_CLAIMED, {"envelope_json": envelope_json})

    def _finish(self, claim: Claim, doing: str, statement: str, params: dict[str, Any]) -> None:
        """Run the statement that ends a sender's claim, while this process still holds it.

        Retried for a while if the database is away (a restart or fail-over takes seconds;
        giving up means the message is sent again once the lease runs out).
        """
        self._forget(claim)
        queue_id = claim.queue_id
        params = {**params, "claimed_id": queue_id, "owner": self.lease_owner}
        deadline = time.monotonic() + min(60.0, self.claim_timeout / 2)
        pause = 0.25
        while True:
            try:
                done, _ = self._run(statement, params, doing=f"{doing} (queue id {queue_id})")
                break
            except QueueUnavailableError as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("%s; trying again in %.1fs", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
        if not done:
            log.error(
                "queue id %s (Message-ID %s): this sender's claim ran out before %s; another sender may "
                "deliver it again",
                queue_id,
                claim.envelope.message_id,
                doing,
            )

    def _lease_params(self) -> dict[str, Any]:
        return {"owner": self.lease_owner, "claim_timeout": self.claim_timeout}

    # -- leases ------------------------------------------------------------------------------

    def _keep(self, claim: DatabaseClaim) -> None:
        with self._keeper_lock:
            if self._keeper is None:
                self._keeper = LeaseKeeper(self.renew_leases, self.claim_timeout / 3)
            self._keeper.add(claim.queue_id)

    def _forget(self, claim: Claim) -> None:
        if isinstance(claim, DatabaseClaim):
            claim.queue = None
        if self._keeper is not None:
            self._keeper.discard(claim.queue_id)

    def _release(self, claim: Claim) -> None:
        """Let a lease run out now: a sender's message is then recovered by the next run."""
        self._forget(claim)
        try:
            self._run(
                sql.RELEASE,
                {"queue_id": claim.queue_id, "owner": self.lease_owner},
                doing=f"releasing queue id {claim.queue_id}",
                durable=False,
            )
        except QueueUnavailableError as exc:
            log.warning("%s; the claim on queue id %s runs out by itself", exc, claim.queue_id)

    def renew_leases(self, queue_ids: list[str]) -> list[str]:
        """Extend this process's leases on ``queue_ids``; return the ids whose lease was lost."""
        _count, rows = self._run(
            sql.RENEW_LEASES,
            {"queue_ids": list(queue_ids), **self._lease_params()},
            doing="renewing claims",
            durable=False,
        )
        renewed = {row[0] for row in rows}
        return [queue_id for queue_id in queue_ids if queue_id not in renewed]

    # -- the daemon's side -------------------------------------------------------------------

    def watch(self, wake_fd: int, poll_interval: float) -> NotificationWatcher:
        """A watcher that wakes on ``NOTIFY`` (sent when mail commits), polling as a fallback."""
        return NotificationWatcher(self._db.listen_connection, self.location, wake_fd, poll_interval)

    def daemon_lock(self) -> None:
        """Nothing to lock: any number of daemons on any number of hosts may share the queue."""

    # -- the operator's side -----------------------------------------------------------------

    def entries(self, state: MessageState | str | None = None) -> Iterator[Entry]:
        """Every message (or those in ``state``): states in ``STATES`` order, oldest first."""
        if state is None:
            _count, rows = self._run(sql.ENTRIES, doing="listing the queue")
        else:
            _count, rows = self._run(
                sql.ENTRIES_IN_STATE, {"state": MessageState(state).value}, doing="listing the queue"
            )
        found = [_entry(*row) for row in rows]
        order = {name: index for index, name in enumerate(STATES)}
        yield from sorted(found, key=lambda entry: (order[entry.state], entry.queue_id))

    def not_messages(self, state: MessageState | str | None = None) -> list[str]:
        """A table holds only messages: nothing stray to report."""
        return []

    def find(self, queue_id: str) -> Entry:
        """The entry of ``queue_id``, or :class:`UnknownQueueIdError`."""
        if not isinstance(queue_id, str) or not is_queue_id(queue_id):
            raise UnknownQueueIdError(
                f"{queue_id!r} is not a queue id (expected e.g. 20261128T151136123456Z-9f3a2b1c0d)"
            )
        _count, rows = self._run(sql.FIND, {"queue_id": queue_id}, doing=f"looking up queue id {queue_id}")
        if not rows:
            raise UnknownQueueIdError(f"queue id {queue_id} is not in the queue at {self.location}")
        return _entry(*rows[0])

    def read(self, entry: Entry) -> tuple[Envelope, bytes]:
        """The envelope and message of a listed message (``FileNotFoundError`` once it is gone)."""
        envelope_json, message = self._read_row(entry)
        return Envelope.from_json(envelope_json), message

    def read_raw(self, entry: Entry) -> bytes:
        """The stored record: the envelope's JSON as stored, a newline, the message."""
        envelope_json, message = self._read_row(entry)
        return envelope_json + b"\n" + message

    def _read_row(self, entry: Entry) -> tuple[bytes, bytes]:
        _count, rows = self._run(sql.READ, {"queue_id": entry.queue_id}, doing=f"reading queue id {entry.queue_id}")
        if not rows:
            raise FileNotFoundError(f"queue id {entry.queue_id} is no longer in the queue at {self.location}")
        return rows[0][0].encode(), bytes(rows[0][1])

    def lock(self, entry: Entry) -> DatabaseClaim | None:
        """Take a lease on a message where it lies; None when a sender or operator holds it."""
        with self._transaction(f"locking queue id {entry.queue_id}") as statements:
            _count, rows = statements.run(sql.LOCK, {"queue_id": entry.queue_id})
            if not rows:
                return None
            statements.run(sql.TAKE_LEASE, {"queue_id": entry.queue_id, **self._lease_params()})
        row = rows[0]
        try:
            envelope: Any = Envelope.from_json(row[0].encode())
        except CorruptMessageError:
            envelope = None
        claim = DatabaseClaim(entry.queue_id, envelope, bytes(row[1]), queue=self)
        self._keep(claim)
        return claim

    def move(
        self, claim: Claim, source: MessageState | str, target: MessageState | str, envelope_changed: bool = False
    ) -> None:
        """Move a locked message from ``source`` to ``target`` (queued: due at once)."""
        target = MessageState(target)
        due_at: datetime.datetime | None = None
        if target == MessageState.DEFERRED:
            due_at = _utc(claim.envelope.next_attempt or time.time())
        params = {
            "target": target.value,
            "due_now": target == MessageState.QUEUED,
            "due_at": due_at,
            "envelope_json": claim.envelope.to_json().decode() if envelope_changed else None,
        }
        self._operator_change(claim, source, sql.MOVE_LOCKED, params, f"moving it to {target}")

    def remove(self, claim: Claim, state: MessageState | str) -> None:
        """Delete a locked message for good."""
        self._operator_change(claim, state, sql.REMOVE_LOCKED, {}, "removing it")

    def _operator_change(
        self, claim: Claim, state: MessageState | str, statement: str, params: dict[str, Any], doing: str
    ) -> None:
        self._forget(claim)
        params = {**params, "queue_id": claim.queue_id, "source": MessageState(state).value, "owner": self.lease_owner}
        done, _ = self._run(statement, params, doing=f"{doing} (queue id {claim.queue_id})")
        if not done:
            raise QueueWriteError(f"queue id {claim.queue_id}: the lock ran out or the message moved before {doing}")

    # -- moving a queue directory's mail in (mq-queue import-dir) -----------------------------

    def stage_import(self, queue_id: str, state: MessageState | str, envelope: Envelope, message: bytes) -> bool:
        """Store a message moved from a queue directory under its own queue id, invisible
        to senders until :meth:`finish_import` gives it ``state``; False when the id is taken.

        The row is ``staged``; its ``lease_owner`` records the state to come
        (:data:`IMPORT_OWNER` and the state), so an interrupted move can be finished
        (:meth:`pending_imports`), and ``cleanup`` leaves it alone.
        """
        state = MessageState(state)
        due_at: datetime.datetime | None = None
        if state == MessageState.QUEUED:
            due_at = _utc(time.time())
        elif state == MessageState.DEFERRED:
            due_at = _utc(envelope.next_attempt if envelope.next_attempt is not None else time.time())
        params = {
            "queue_id": queue_id,
            "due_at": due_at,
            "owner": IMPORT_OWNER + state.value,
            "envelope": envelope.to_json().decode(),
            "message": message,
        }
        done, _ = self._run(sql.STAGE_IMPORT, params, doing=f"storing queue id {queue_id}")
        return bool(done)

    def finish_import(self, queue_id: str) -> MessageState | None:
        """Give a message stored by :meth:`stage_import` its state (senders see it from now
        on); its state, or None when it is no such message (finished already)."""
        with self._transaction(f"publishing queue id {queue_id}") as statements:
            _count, rows = statements.run(sql.FINISH_IMPORT, {"queue_id": queue_id})
            state = rows[0][0] if rows else None
            if state in (_QUEUED, _DEFERRED):
                statements.run(sql.NOTIFY)
        return None if state is None else MessageState(state)

    def pending_imports(self) -> list[tuple[str, MessageState]]:
        """The messages :meth:`stage_import` stored and :meth:`finish_import` has not
        published yet (a move interrupted by a crash), with their states to come."""
        _count, rows = self._run(sql.PENDING_IMPORTS, doing="looking for interrupted moves")
        return [(queue_id, MessageState(owner[len(IMPORT_OWNER) :])) for queue_id, owner in rows]


def _row(queue_id: str, state: str, envelope: Envelope, message: bytes) -> dict[str, Any]:
    now = _utc(time.time())
    return {
        "queue_id": queue_id,
        "state": state,
        "state_since": now,
        "due_at": now if state == _QUEUED else None,
        "envelope": envelope.to_json().decode(),
        "message": message,
    }


def _entry(
    queue_id: str, state: str, state_since: datetime.datetime, due_at: datetime.datetime | None, size: int
) -> Entry:
    message_state = MessageState(state)
    moment = due_at if message_state == MessageState.DEFERRED and due_at is not None else state_since
    return Entry(queue_id, message_state, moment.timestamp(), int(size or 0))


def _refusal(exc: BaseException) -> str:
    """What the database answered, in one line (the driver's error under SQLAlchemy's)."""
    return first_line(getattr(exc, "orig", None) or exc)
