"""The PostgreSQL queue: the mail outbox in the application's own database.

``DatabaseQueue(url_or_engine)`` implements :class:`~mq_transaction.interfaces.IMailQueue`
over the tables of :mod:`mq_transaction.database_schema`, through SQLAlchemy Core, so
everything above the queue (the mailer, the sender, the daemon, ``mq-queue``) is the
code the directory queue uses.

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
import select
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from zope.interface import implementer

from . import database_schema as schema
from .database_schema import STAGED, messages
from .errors import (
    ConfigurationError,
    CorruptMessageError,
    MailQueueError,
    QueueUnavailableError,
    QueueWriteError,
    UnknownQueueIdError,
)
from .interfaces import IMailWatcher, ISessionMailQueue
from .queue_ids import is_queue_id, new_queue_id
from .queuefile import Envelope
from .records import Claim, Entry
from .states import STATES, MessageState

log = logging.getLogger("mq_transaction.database_queue")

#: The ``LISTEN``/``NOTIFY`` channel; the payload is empty (a wake-up, never the message).
NOTIFY_CHANNEL = "mq_transaction_queued"

#: ``lease_owner`` of a message moved in from a queue directory and not published yet
#: (``staged``), followed by the state it will have (``mq-queue import-dir``).
IMPORT_OWNER = "import-dir:"
#: how long a message stays half moved by a running ``import-dir`` (milliseconds, in
#: fact) before clean-up calls the move interrupted and warns about it
INTERRUPTED_IMPORT_AGE = 600.0

#: Seconds one connection attempt may take (libpq's ``connect_timeout``) unless the URL
#: sets its own (``?connect_timeout=N``): a database host that accepts and never answers
#: (a frozen server, a fail-over under way) would otherwise hold a sender, and its
#: ``SIGTERM``, for good.
CONNECT_TIMEOUT = 10

#: The default lease of a claim (``mq.claim_timeout``), in seconds.
DEFAULT_CLAIM_TIMEOUT = 300.0

_QUEUED, _DEFERRED, _SENDING = MessageState.QUEUED.value, MessageState.DEFERRED.value, MessageState.SENDING.value
_FAILED = MessageState.FAILED.value
_T = TypeVar("_T")


def normalise_url(url: str | sa.URL) -> sa.URL:
    """An SQLAlchemy URL for PostgreSQL; plain ``postgresql://`` means the psycopg 3 driver.

    Raises :class:`ConfigurationError` (the password masked) for anything but PostgreSQL.
    """
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(schema.URL_KEY, f"{mask_url(url)} is not a database URL ({exc})") from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(
            schema.URL_KEY, f"{parsed.render_as_string(hide_password=True)} is not a PostgreSQL URL (postgresql://...)"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def mask_url(url: str | sa.URL) -> str:
    """``url`` with its password replaced by ``***``, as SQLAlchemy renders it; never raises."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL may still hold a password
        text = str(url)
        scheme, sep, rest = text.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if sep and at and ":" in userinfo:
            return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
        return text if not at else f"{scheme}{sep}***@{host}"


def _connect_args(url: sa.URL, **args: Any) -> dict[str, Any]:
    """The driver's connection arguments: ``args``, and :data:`CONNECT_TIMEOUT` unless the URL sets one."""
    if "connect_timeout" not in url.query:
        args["connect_timeout"] = CONNECT_TIMEOUT
    return args


#: Every DatabaseQueue of this process, so that a forked child drops the connections it inherited.
_QUEUES: weakref.WeakSet[DatabaseQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_QUEUES):
        queue._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _half_imported() -> sa.ColumnElement[bool]:
    """The rows ``import-dir`` stored and has not published yet (``staged``, owned by it)."""
    return sa.and_(messages.c.state == STAGED, messages.c.lease_owner.startswith(IMPORT_OWNER, autoescape=True))


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)


def _unix(moment: datetime.datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


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
    database.
    """

    def __init__(
        self,
        url_or_engine: str | sa.URL | sa.Engine,
        *,
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
        host_name: str | None = None,
    ) -> None:
        if isinstance(url_or_engine, sa.Engine):
            self.engine = url_or_engine
            self.url = url_or_engine.url
        else:
            self.url = normalise_url(url_or_engine)
            self.engine = sa.create_engine(self.url, pool_size=6, max_overflow=10, connect_args=_connect_args(self.url))
        # One statement, one round trip: statements that stand alone run in autocommit (no
        # BEGIN and COMMIT of their own). No pre-ping either (a round trip per checkout): a
        # connection that died fails once, SQLAlchemy drops the pool, and callers retry.
        self._autocommit: sa.Engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # Claims and lease changes need not wait for the WAL flush: the durable record of
        # a delivery (a synchronous commit) flushes them with it. A claim lost in a crash
        # of the database server puts the message back in queued, as a dead sender's does.
        self._claims: sa.Engine = self._autocommit
        self._owns_engines = not isinstance(url_or_engine, sa.Engine)
        #: The hot statements compiled once for the driver: (SQL, default parameters).
        self._compiled: dict[Any, tuple[str, dict[str, Any]]] = {}
        if self._owns_engines:
            # Engines of our own are in autocommit from the start: switching a pooled
            # connection in and out of it at every checkout costs a third of a hot
            # statement's CPU (bench/README.md, "PostgreSQL drain").
            self._autocommit = sa.create_engine(
                self.url,
                pool_size=6,
                max_overflow=10,
                isolation_level="AUTOCOMMIT",
                connect_args=_connect_args(self.url),
            )
            self._claims = sa.create_engine(
                self.url,
                pool_size=6,
                max_overflow=10,
                isolation_level="AUTOCOMMIT",
                connect_args=_connect_args(self.url, options="-c synchronous_commit=off"),
            )
        if claim_timeout <= 0:
            raise ConfigurationError("mq.claim_timeout", f"{claim_timeout!r} must be a positive number of seconds")
        self.claim_timeout = float(claim_timeout)
        self._host_name = host_name or socket.gethostname()
        #: Who holds this process's claims, as ``mq-queue`` shows it: host, PID, token.
        self.lease_owner = f"{self._host_name}:{os.getpid()}:{secrets.token_hex(3)}"
        self._schema_checked = False
        self._checked_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
        self._keeper: _LeaseKeeper | None = None
        self._keeper_lock = threading.Lock()
        _QUEUES.add(self)

    @property
    def location(self) -> str:
        """The database URL with its password masked."""
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"DatabaseQueue({self.location!r})"

    # -- connections and errors ----------------------------------------------------------

    @contextmanager
    def _transaction(self, doing: str, engine: sa.Engine | None = None) -> Iterator[sa.Connection]:
        """A short transaction on the queue's own connection (or one statement in
        autocommit, with ``engine``); connection trouble becomes
        :class:`QueueUnavailableError` naming what was being done."""
        try:
            if not self._schema_checked:
                self.check_schema()
            with (engine or self.engine).begin() as connection:
                yield connection
        except sa.exc.DBAPIError as exc:
            if not _is_connection_trouble(exc):
                raise
            raise QueueUnavailableError(
                f"the queue database {self.location} cannot be used while {doing}: {_reason(exc)}"
            ) from exc

    def check_schema(self) -> None:
        """Raise :class:`ConfigurationError` unless the tables exist in this code's version
        (saying to run ``init-db``); :class:`QueueUnavailableError` when the database
        cannot be reached."""
        try:
            # In autocommit: a sender then never opens a connection of ``self.engine``
            # (its first connection costs the server a backend and the client the dialect's
            # start-up queries).
            with self._autocommit.connect() as connection:
                schema.check_schema(connection, self.location)
        except sa.exc.DBAPIError as exc:
            raise QueueUnavailableError(
                f"cannot connect to the queue database {self.location}: {_reason(exc)}"
            ) from exc
        self._schema_checked = True

    def init_db(self) -> bool:
        """Create the tables unless they exist (``mq-queue init-db``); True if created.

        Raises :class:`QueueUnavailableError` when the database cannot be reached, and
        :class:`QueueWriteError` saying what the database answered when it refuses (no
        permission to create tables).
        """
        try:
            with self.engine.begin() as connection:
                created = schema.init_db(connection)
        except sa.exc.DBAPIError as exc:
            if _is_connection_trouble(exc):
                raise QueueUnavailableError(
                    f"cannot connect to the queue database {self.location}: {_reason(exc)}"
                ) from exc
            raise QueueWriteError(f"cannot create the mail queue tables in {self.location}: {_reason(exc)}") from exc
        self._schema_checked = True
        return created

    def _after_fork_in_child(self) -> None:
        """A forked process (a pre-fork web server's worker) starts with no connection.

        The pooled connections it inherited are the parent's: using one from two
        processes mixes their conversations with the server, so they are dropped
        unclosed (the parent keeps using them). The child claims under an owner of its own
        and renews no lease of the parent's.
        """
        engines = {id(engine): engine for engine in (self.engine, self._autocommit, self._claims)}
        for engine in engines.values():
            engine.dispose(close=False)
        self.lease_owner = f"{self._host_name}:{os.getpid()}:{secrets.token_hex(3)}"
        self._keeper = None
        self._keeper_lock = threading.Lock()

    def dispose(self) -> None:
        """Stop renewing leases and close the pooled connections."""
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        self.engine.dispose()
        if self._claims is not self._autocommit:  # both ours, made from the URL
            self._autocommit.dispose()
            self._claims.dispose()

    # -- the application's side ------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise unless this process can insert into the queue table (checks the schema too)."""
        try:
            with self._transaction("checking it can be written") as connection:
                allowed = connection.execute(
                    sa.select(sa.func.has_table_privilege(messages.name, "INSERT, UPDATE, DELETE"))
                ).scalar()
        except QueueUnavailableError as exc:
            raise QueueWriteError(str(exc)) from exc
        if not allowed:
            raise QueueWriteError(
                f"the database user of {self.location} may not insert, update and delete rows of {messages.name}"
            )

    def insert(self, connection: sa.Connection, envelope: Envelope, message: bytes) -> str:
        """Queue a message on ``connection`` (the app's, in its transaction); return its id.

        The row is ``queued`` and a ``NOTIFY`` wakes the daemons, both only when that
        transaction commits: this is the same-transaction mode.
        """
        queue_id = new_queue_id(envelope.queued_at)
        connection.execute(_INSERT_AND_NOTIFY, _row(queue_id, MessageState.QUEUED.value, envelope, message))
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
        with self.engine.connect() as own:
            mine = own.execute(_IDENTITY).one()
        return tuple(connection.execute(_IDENTITY).one()) == tuple(mine)

    def stage(self, envelope: Envelope, message: bytes) -> str:
        """Insert a ``staged`` row, committed at once on the queue's own connection; return its id."""
        queue_id = new_queue_id(envelope.queued_at)
        try:
            with self._transaction(f"staging queue id {queue_id}", self._autocommit) as connection:
                connection.execute(_insert_statement(), _row(queue_id, STAGED, envelope, message))
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
                with self._transaction("publishing committed mail") as connection:
                    found = connection.execute(
                        sa.update(messages)
                        .where(messages.c.queue_id.in_(queue_ids), messages.c.state == STAGED)
                        .values(state=_QUEUED, due_at=sa.func.now(), state_since=sa.func.now())
                        .returning(messages.c.queue_id)
                    ).scalars()
                    published = set(found)
                    connection.execute(_notify_statement())
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
                f"{problem}; the message is staged in table {messages.name} of {self.location}: to send it, run "
                f"UPDATE {messages.name} SET state = 'queued', due_at = now() WHERE queue_id = '{queue_id}'",
            )
            for queue_id in queue_ids
        ]

    def discard(self, queue_ids: list[str]) -> None:
        """Delete staged rows (the abort); published ones are never touched."""
        if not queue_ids:
            return
        with self._transaction("discarding aborted mail", self._autocommit) as connection:
            connection.execute(
                sa.delete(messages).where(messages.c.queue_id.in_(queue_ids), messages.c.state == STAGED)
            )

    def enqueue(self, envelope: Envelope, message: bytes) -> str:
        """Queue a message at once, in a transaction of its own; return its id."""
        try:
            with self._transaction("queueing a message") as connection:
                return self.insert(connection, envelope, message)
        except QueueUnavailableError as exc:
            raise QueueWriteError(str(exc)) from exc

    def cleanup(self, max_age: float, now: float | None = None) -> list[str]:
        """Delete staged rows older than ``max_age`` seconds (their process died mid-request)."""
        now = time.time() if now is None else now
        with self._transaction("removing abandoned staged mail", self._autocommit) as connection:
            removed = list(
                connection.execute(
                    sa.delete(messages)
                    .where(
                        messages.c.state == STAGED,
                        messages.c.state_since < _utc(now - max_age),
                        # a message half moved in from a queue directory waits for import-dir
                        sa.or_(
                            messages.c.lease_owner.is_(None),
                            sa.not_(messages.c.lease_owner.startswith(IMPORT_OWNER, autoescape=True)),
                        ),
                    )
                    .returning(messages.c.queue_id)
                ).scalars()
            )
        for queue_id in removed:
            log.info("removed staged queue id %s (older than %.0fs; its transaction never ended)", queue_id, max_age)
        self._warn_of_interrupted_imports(now)
        return removed

    def _warn_of_interrupted_imports(self, now: float) -> None:
        """Say, at every clean-up, that messages wait for an interrupted ``import-dir`` to be
        run again: nothing else ever makes them visible, and no sender sees them until then."""
        with self._transaction("looking for interrupted moves", self._autocommit) as connection:
            waiting = connection.execute(
                sa.select(sa.func.count(), sa.func.min(messages.c.queue_id)).where(
                    _half_imported(),
                    messages.c.state_since < _utc(now - INTERRUPTED_IMPORT_AGE),
                )
            ).one()
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
        with self._transaction("recovering dead senders' claims", self._autocommit) as connection:
            rows = connection.execute(
                sa.update(messages)
                .where(messages.c.state == _SENDING, messages.c.lease_until < sa.func.now())
                .values(
                    state=_QUEUED, due_at=sa.func.now(), state_since=sa.func.now(), lease_owner=None, lease_until=None
                )
                .returning(messages.c.queue_id)
            ).scalars()
            recovered = list(rows)
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
        deferred_due = messages.c.state == _DEFERRED
        if not flush:
            deferred_due = sa.and_(deferred_due, messages.c.due_at <= _utc(now))
        with self._transaction("listing due mail", self._autocommit) as connection:
            ids = list(
                connection.execute(
                    sa.select(messages.c.queue_id)
                    .where(sa.or_(messages.c.state == _QUEUED, deferred_due), _unleased())
                    .order_by(messages.c.queue_id)
                ).scalars()
            )
            others = connection.execute(
                sa.select(messages.c.queue_id)
                .where(messages.c.state == _SENDING, messages.c.lease_owner != self.lease_owner)
                .limit(1)
            ).first()
        if others is not None and len(ids) > 1:
            start = secrets.randbelow(len(ids))
            ids = ids[start:] + ids[:start]
        return ids

    def next_retry_time(self) -> float | None:
        """The earliest next attempt time of a deferred message, or None."""
        with self._transaction("reading the retry schedule", self._autocommit) as connection:
            return _unix(
                connection.execute(
                    sa.select(sa.func.min(messages.c.due_at)).where(messages.c.state == _DEFERRED)
                ).scalar()
            )

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
        """
        if not queue_ids:
            return [], []
        # One statement: the row locks of SKIP LOCKED are held only while it runs.
        doing = f"claiming queue id {queue_ids[0]} and {len(queue_ids) - 1} more"
        # Tried again on a new connection if its pooled one was cut (the first claim after a
        # database restart): a row claimed just before the cut is leased to this sender, so
        # the second try skips it (it goes back to queued when the lease runs out) and no
        # message is ever claimed twice.
        _count, rows = self._execute_hot(
            self._claims, _CLAIM, {"queue_ids": list(queue_ids), **self._lease_params()}, doing, again_if_cut=True
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
        with self._transaction(f"moving queue id {queue_id} to corrupt", self._autocommit) as connection:
            connection.execute(
                sa.update(messages)
                .where(messages.c.queue_id == queue_id)
                .values(
                    state=MessageState.CORRUPT.value,
                    state_since=sa.func.now(),
                    due_at=None,
                    lease_owner=None,
                    lease_until=None,
                )
            )

    def finish_delivered(self, claim: Claim) -> None:
        """Delete the delivered message's row (if this process still holds its lease)."""
        self._finish(claim, "recording its delivery", _DELETE_CLAIMED, {})

    def finish_deferred(self, claim: Claim, next_attempt: float) -> None:
        """Store the envelope and defer the message until ``next_attempt``."""
        claim.envelope.next_attempt = next_attempt
        self._finish(
            claim,
            "deferring it",
            _SETTLE_CLAIMED,
            {"new_state": _DEFERRED, "due_at": _utc(next_attempt), "envelope_json": claim.envelope.to_json().decode()},
        )

    def finish_failed(self, claim: Claim) -> None:
        """Store the envelope and move the message to ``failed``."""
        claim.envelope.next_attempt = None
        self._finish(
            claim,
            "recording its failure",
            _SETTLE_CLAIMED,
            {"new_state": _FAILED, "due_at": None, "envelope_json": claim.envelope.to_json().decode()},
        )

    def unclaim(self, claim: Claim, envelope_changed: bool = False) -> None:
        """Give the message back to ``queued``, due at once."""
        envelope_json = claim.envelope.to_json().decode() if envelope_changed else None
        self._finish(claim, "giving it back", _REQUEUE_CLAIMED, {"envelope_json": envelope_json})

    def _moved(self, claim: Claim, state: str, due_at: Any, envelope: bool = True) -> sa.Update:
        values: dict[str, Any] = {
            "state": state,
            "state_since": sa.func.now(),
            "due_at": due_at,
            "lease_owner": None,
            "lease_until": None,
        }
        if envelope:
            values["envelope"] = _envelope_json(claim.envelope)
        return sa.update(messages).values(**values)

    def _finish(self, claim: Claim, doing: str, statement: sa.Update | sa.Delete, params: dict[str, Any]) -> None:
        """Run the statement that ends a sender's claim, while this process still holds it.

        ``statement`` is one of the prebuilt ones below (``_DELETE_CLAIMED``...): building
        it afresh cost more CPU than the SMTP dialog of the message. Retried for a while if
        the database is away (a restart or fail-over takes seconds; giving up means the
        message is sent again once the lease runs out).
        """
        self._forget(claim)
        queue_id = claim.queue_id
        params = {**params, "claimed_id": queue_id, "owner": self.lease_owner}
        deadline = time.monotonic() + min(60.0, self.claim_timeout / 2)
        pause = 0.25
        while True:
            try:
                done, _ = self._execute_hot(self._autocommit, statement, params, f"{doing} (queue id {queue_id})")
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

    def _execute_hot(
        self,
        engine: sa.Engine,
        statement: sa.Update | sa.Delete,
        params: dict[str, Any],
        doing: str,
        *,
        again_if_cut: bool = False,
    ) -> tuple[int, list[Any]]:
        """Run one of the sender's prebuilt statements in autocommit; return its row count
        and the rows it returned (``RETURNING``), as tuples.

        On engines of our own, through the driver's cursor with the SQL compiled once: a
        statement then costs half the CPU it costs through a SQLAlchemy ``Connection``
        (bench/README.md, "PostgreSQL drain"). On an application's engine, whose autocommit
        is an execution option, through SQLAlchemy. Connection trouble becomes
        :class:`QueueUnavailableError`, as in :meth:`_transaction`.

        A pooled connection found cut (a restart or a fail-over cuts every connection the
        pool holds) empties the engine's pool, as SQLAlchemy does for the statements it runs
        itself, so the next statement connects afresh instead of meeting the next dead
        connection. With ``again_if_cut``, for a statement that may safely run twice, it
        is then tried once more on a new connection.
        """
        if not self._owns_engines:
            with self._transaction(doing, engine) as connection:
                result = connection.execute(statement, params)
                return int(result.rowcount), [tuple(row) for row in result] if result.returns_rows else []
        if not self._schema_checked:
            self.check_schema()
        compiled = self._compiled.get(statement)
        if compiled is None:
            sql = statement.compile(dialect=engine.dialect)
            defaults = {name: bind.value for name, bind in sql.binds.items() if not bind.required}
            compiled = self._compiled[statement] = (str(sql), defaults)
        try:
            return self._execute_raw(engine, compiled[0], {**compiled[1], **params}, doing)
        except _ConnectionCut:
            if not again_if_cut:
                raise
        return self._execute_raw(engine, compiled[0], {**compiled[1], **params}, doing)

    def _execute_raw(self, engine: sa.Engine, sql: str, params: dict[str, Any], doing: str) -> tuple[int, list[Any]]:
        """:meth:`_execute_hot`'s statement on a pooled connection of our own engine, once."""
        dialect = engine.dialect
        try:
            raw = engine.raw_connection()  # raises the driver's own error when it cannot connect
        except (sa.exc.DBAPIError, dialect.loaded_dbapi.Error) as exc:  # a restart, a fail-over
            reason = _reason(exc) if isinstance(exc, sa.exc.DBAPIError) else _first_line(exc)
            raise QueueUnavailableError(
                f"the queue database {self.location} cannot be used while {doing}: {reason}"
            ) from exc
        cursor = None
        try:
            cursor = raw.cursor()
            cursor.execute(sql, params)
            return int(cursor.rowcount), list(cursor.fetchall()) if cursor.description is not None else []
        except dialect.loaded_dbapi.Error as exc:
            problem = f"the queue database {self.location} cannot be used while {doing}: {_first_line(exc)}"
            if dialect.is_disconnect(exc, raw.dbapi_connection, cursor):
                raw.invalidate(exc)
                engine.dispose()  # the pool's other connections were cut too: a new pool connects afresh
                raise _ConnectionCut(problem) from exc
            if isinstance(exc, (dialect.loaded_dbapi.OperationalError, dialect.loaded_dbapi.InterfaceError)):
                raise QueueUnavailableError(problem) from exc
            raise
        finally:
            if cursor is not None:
                try:
                    cursor.close()
                except Exception:  # noqa: BLE001, S110 - a cursor of a connection that died
                    pass
            raw.close()

    def _lease_params(self) -> dict[str, Any]:
        return {"owner": self.lease_owner, "claim_timeout": self.claim_timeout}

    def _lease_values(self) -> dict[str, Any]:
        return {
            "lease_owner": self.lease_owner,
            "lease_until": sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, self.claim_timeout),
        }

    # -- leases ------------------------------------------------------------------------------

    def _keep(self, claim: DatabaseClaim) -> None:
        with self._keeper_lock:
            if self._keeper is None:
                self._keeper = _LeaseKeeper(self)
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
            with self._transaction(f"releasing queue id {claim.queue_id}", self._claims) as connection:
                connection.execute(
                    sa.update(messages)
                    .where(messages.c.queue_id == claim.queue_id, messages.c.lease_owner == self.lease_owner)
                    .values(lease_until=sa.func.now())
                )
        except QueueUnavailableError as exc:
            log.warning("%s; the claim on queue id %s runs out by itself", exc, claim.queue_id)

    def renew_leases(self, queue_ids: list[str]) -> list[str]:
        """Extend this process's leases on ``queue_ids``; return the ids whose lease was lost."""
        with self._transaction("renewing claims", self._claims) as connection:
            renewed = set(
                connection.execute(
                    sa.update(messages)
                    .where(messages.c.queue_id.in_(queue_ids), messages.c.lease_owner == self.lease_owner)
                    .values(lease_until=self._lease_values()["lease_until"])
                    .returning(messages.c.queue_id)
                ).scalars()
            )
        return [queue_id for queue_id in queue_ids if queue_id not in renewed]

    # -- the daemon's side -------------------------------------------------------------------

    def watch(self, wake_fd: int, poll_interval: float) -> NotificationWatcher:
        """A watcher that wakes on ``NOTIFY`` (sent when mail commits), polling as a fallback."""
        return NotificationWatcher(self, wake_fd, poll_interval)

    def daemon_lock(self) -> None:
        """Nothing to lock: any number of daemons on any number of hosts may share the queue."""

    # -- the operator's side -----------------------------------------------------------------

    def entries(self, state: MessageState | str | None = None) -> Iterator[Entry]:
        """Every message (or those in ``state``): states in ``STATES`` order, oldest first."""
        query = sa.select(
            messages.c.queue_id,
            messages.c.state,
            messages.c.state_since,
            messages.c.due_at,
            (sa.func.octet_length(messages.c.message) + sa.func.octet_length(sa.cast(messages.c.envelope, sa.Text))),
        ).where(messages.c.state != STAGED)
        if state is not None:
            query = query.where(messages.c.state == MessageState(state).value)
        with self._transaction("listing the queue", self._autocommit) as connection:
            rows = connection.execute(query.order_by(messages.c.queue_id)).all()
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
        with self._transaction(f"looking up queue id {queue_id}", self._autocommit) as connection:
            row = connection.execute(
                sa.select(
                    messages.c.queue_id,
                    messages.c.state,
                    messages.c.state_since,
                    messages.c.due_at,
                    sa.func.octet_length(messages.c.message)
                    + sa.func.octet_length(sa.cast(messages.c.envelope, sa.Text)),
                ).where(messages.c.queue_id == queue_id, messages.c.state != STAGED)
            ).one_or_none()
        if row is None:
            raise UnknownQueueIdError(f"queue id {queue_id} is not in the queue at {self.location}")
        return _entry(*row)

    def read(self, entry: Entry) -> tuple[Envelope, bytes]:
        """The envelope and message of a listed message (``FileNotFoundError`` once it is gone)."""
        envelope_json, message = self._read_row(entry)
        return Envelope.from_json(envelope_json), message

    def read_raw(self, entry: Entry) -> bytes:
        """The stored record: the envelope's JSON as stored, a newline, the message."""
        envelope_json, message = self._read_row(entry)
        return envelope_json + b"\n" + message

    def _read_row(self, entry: Entry) -> tuple[bytes, bytes]:
        with self._transaction(f"reading queue id {entry.queue_id}", self._autocommit) as connection:
            row = connection.execute(
                sa.select(sa.cast(messages.c.envelope, sa.Text), messages.c.message).where(
                    messages.c.queue_id == entry.queue_id, messages.c.state != STAGED
                )
            ).one_or_none()
        if row is None:
            raise FileNotFoundError(f"queue id {entry.queue_id} is no longer in the queue at {self.location}")
        return row[0].encode(), bytes(row[1])

    def lock(self, entry: Entry) -> DatabaseClaim | None:
        """Take a lease on a message where it lies; None when a sender or operator holds it."""
        with self._transaction(f"locking queue id {entry.queue_id}") as connection:
            row = connection.execute(
                sa.select(sa.cast(messages.c.envelope, sa.Text), messages.c.message)
                .where(messages.c.queue_id == entry.queue_id, messages.c.state != STAGED, _unleased())
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None:
                return None
            connection.execute(
                sa.update(messages).where(messages.c.queue_id == entry.queue_id).values(**self._lease_values())
            )
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
        due_at: Any = None
        if target == MessageState.QUEUED:
            due_at = sa.func.now()
        elif target == MessageState.DEFERRED:
            due_at = _utc(claim.envelope.next_attempt or time.time())
        self._operator_change(
            claim, source, self._moved(claim, target.value, due_at, envelope_changed), f"moving it to {target}"
        )

    def remove(self, claim: Claim, state: MessageState | str) -> None:
        """Delete a locked message for good."""
        self._operator_change(claim, state, sa.delete(messages), "removing it")

    def _operator_change(
        self, claim: Claim, state: MessageState | str, statement: sa.Update | sa.Delete, doing: str
    ) -> None:
        self._forget(claim)
        with self._transaction(f"{doing} (queue id {claim.queue_id})") as connection:
            done = connection.execute(
                statement.where(
                    messages.c.queue_id == claim.queue_id,
                    messages.c.state == MessageState(state).value,
                    messages.c.lease_owner == self.lease_owner,
                )
            ).rowcount
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
        statement = (
            postgresql.insert(messages)
            .values(
                queue_id=queue_id,
                state=STAGED,
                state_since=sa.func.now(),
                due_at=due_at,
                lease_owner=IMPORT_OWNER + state.value,
                envelope=_envelope_json(envelope),
                message=message,
            )
            .on_conflict_do_nothing(index_elements=[messages.c.queue_id])
        )
        with self._transaction(f"storing queue id {queue_id}", self._autocommit) as connection:
            return bool(connection.execute(statement).rowcount)

    def finish_import(self, queue_id: str) -> MessageState | None:
        """Give a message stored by :meth:`stage_import` its state (senders see it from now
        on); its state, or None when it is no such message (finished already)."""
        target = sa.func.substr(messages.c.lease_owner, len(IMPORT_OWNER) + 1)
        with self._transaction(f"publishing queue id {queue_id}", self._autocommit) as connection:
            state = connection.execute(
                sa.update(messages)
                .where(
                    messages.c.queue_id == queue_id,
                    _half_imported(),
                )
                .values(state=target, state_since=sa.func.now(), lease_owner=None, lease_until=None)
                .returning(messages.c.state)
            ).scalar()
            if state in (_QUEUED, _DEFERRED):
                connection.execute(_notify_statement())
        return None if state is None else MessageState(state)

    def pending_imports(self) -> list[tuple[str, MessageState]]:
        """The messages :meth:`stage_import` stored and :meth:`finish_import` has not
        published yet (a move interrupted by a crash), with their states to come."""
        with self._transaction("looking for interrupted moves", self._autocommit) as connection:
            rows = connection.execute(
                sa.select(messages.c.queue_id, messages.c.lease_owner)
                .where(_half_imported())
                .order_by(messages.c.queue_id)
            ).all()
        return [(queue_id, MessageState(owner[len(IMPORT_OWNER) :])) for queue_id, owner in rows]


class _LeaseKeeper:
    """A thread that renews this process's leases every third of the claim timeout."""

    def __init__(self, queue: DatabaseQueue) -> None:
        self.queue = queue
        self.ids: set[str] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mq-lease-keeper", daemon=True)
        self.thread.start()

    def add(self, queue_id: str) -> None:
        with self.lock:
            self.ids.add(queue_id)

    def discard(self, queue_id: str) -> None:
        with self.lock:
            self.ids.discard(queue_id)

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        while not self.stopped.wait(self.queue.claim_timeout / 3):
            with self.lock:
                held = sorted(self.ids)
            if not held:
                continue
            try:
                lost = self.queue.renew_leases(held)
            except Exception as exc:  # noqa: BLE001 - keep renewing; the next round may work
                log.warning("cannot renew the claims on %d message(s): %s", len(held), exc)
                continue
            for queue_id in lost:
                with self.lock:
                    if queue_id not in self.ids:
                        continue  # finished meanwhile
                log.error("queue id %s: this sender's claim was lost; another sender may deliver it again", queue_id)


@implementer(IMailWatcher)
class NotificationWatcher:
    """Sleeps until a ``NOTIFY`` on :data:`NOTIFY_CHANNEL`, the wake descriptor, or a timeout.

    The listening connection is the driver's own, in autocommit, outside the pool. When
    it is lost (or cannot be made at start-up) the watcher polls every ``poll_interval``
    and tries to make it again; the ``wait`` that makes it returns True at once, so the
    daemon ends its outage's backoff and scans for what it missed.
    """

    def __init__(self, queue: DatabaseQueue, wake_fd: int, poll_interval: float) -> None:
        self.queue = queue
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
            raw = self.queue.engine.raw_connection()
            connection: Any = raw.driver_connection
            raw.detach()  # ours for good: never handed back to the pool in LISTEN state
            connection.autocommit = True
            cursor = connection.cursor()
            cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
            cursor.close()
        except Exception as exc:  # noqa: BLE001 - any failure means: poll, try again later
            if self._down_since is None:  # the daemon logs the database's outages; this is only its wake-ups
                self._down_since = time.monotonic()
                log.info("cannot listen for new mail on %s: %s; polling meanwhile", self.queue.location, exc)
            return False
        if self._down_since is not None:
            log.info("listening for new mail on %s again", self.queue.location)
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
        log.info("lost the listening connection to %s: %s; polling until it is back", self.queue.location, exc)
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


# -- statements ------------------------------------------------------------------------------

#: What identifies one database on one running server, whatever the route to it.
_IDENTITY = sa.text(
    "SELECT current_database(), (SELECT oid FROM pg_database WHERE datname = current_database()), "
    "pg_postmaster_start_time()"
)


def _insert_statement() -> sa.Insert:
    return sa.insert(messages).values(
        queue_id=sa.bindparam("queue_id"),
        state=sa.bindparam("state"),
        state_since=sa.bindparam("state_since"),
        due_at=sa.bindparam("due_at"),
        envelope=sa.cast(sa.bindparam("envelope", type_=sa.Text), postgresql.JSONB),
        message=sa.bindparam("message", type_=sa.LargeBinary),
    )


def _insert_and_notify_statement() -> sa.Select:
    # One statement, so queueing in the app's transaction costs one round trip.
    inserted = _insert_statement().returning(messages.c.queue_id).cte("inserted")
    return sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")).select_from(inserted)


def _notify_statement() -> sa.Select:
    return sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, ""))


_INSERT_AND_NOTIFY = _insert_and_notify_statement()


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


def _envelope_json(envelope: Envelope) -> Any:
    return sa.cast(sa.literal(envelope.to_json().decode(), type_=sa.Text), postgresql.JSONB)


def _unleased() -> sa.ColumnElement[bool]:
    return sa.or_(messages.c.lease_until.is_(None), messages.c.lease_until < sa.func.now())


def _lease_until() -> sa.ColumnElement[Any]:
    return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.bindparam("claim_timeout", type_=sa.Float))


def _claim_statement() -> sa.Update:
    # Built once: a statement built afresh for each message cost more CPU than its SMTP
    # dialog. Values that never change are bound, not expanded per execution (IN lists).
    free = sa.select(messages.c.queue_id).where(
        messages.c.queue_id == sa.any_(sa.bindparam("queue_ids", type_=postgresql.ARRAY(sa.Text))),
        sa.or_(messages.c.state == _QUEUED, messages.c.state == _DEFERRED),
        _unleased(),
    )
    return (
        sa.update(messages)
        .where(messages.c.queue_id.in_(free.order_by(messages.c.queue_id).with_for_update(skip_locked=True)))
        .values(
            state=_SENDING,
            state_since=sa.func.now(),
            lease_owner=sa.bindparam("owner"),
            lease_until=_lease_until(),
        )
        .returning(messages.c.queue_id, sa.cast(messages.c.envelope, sa.Text).label("envelope"), messages.c.message)
    )


def _claimed() -> sa.ColumnElement[bool]:
    """The message is still this sender's: ``claimed_id`` and ``owner`` are bound."""
    return sa.and_(
        messages.c.queue_id == sa.bindparam("claimed_id"),
        messages.c.state == _SENDING,
        messages.c.lease_owner == sa.bindparam("owner"),
    )


def _settle_statement(due_now: bool) -> sa.Update:
    """A claimed message to ``new_state`` (bound), with ``envelope_json`` stored unless NULL."""
    envelope = sa.cast(sa.bindparam("envelope_json", type_=sa.Text), postgresql.JSONB)
    return (
        sa.update(messages)
        .where(_claimed())
        .values(
            state=_QUEUED if due_now else sa.bindparam("new_state"),
            state_since=sa.func.now(),
            due_at=sa.func.now() if due_now else sa.bindparam("due_at", type_=sa.DateTime(timezone=True)),
            lease_owner=None,
            lease_until=None,
            envelope=sa.func.coalesce(envelope, messages.c.envelope),
        )
    )


_CLAIM = _claim_statement()
_DELETE_CLAIMED = sa.delete(messages).where(_claimed())
_SETTLE_CLAIMED = _settle_statement(due_now=False)
_REQUEUE_CLAIMED = _settle_statement(due_now=True)


def _entry(
    queue_id: str, state: str, state_since: datetime.datetime, due_at: datetime.datetime | None, size: int
) -> Entry:
    message_state = MessageState(state)
    moment = due_at if message_state == MessageState.DEFERRED and due_at is not None else state_since
    return Entry(queue_id, message_state, moment.timestamp(), int(size or 0))


def _is_connection_trouble(exc: sa.exc.DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))


class _ConnectionCut(QueueUnavailableError):
    """A pooled connection turned out to be cut; a new one may work (``_execute_hot``)."""


def _reason(exc: sa.exc.DBAPIError) -> str:
    return _first_line(exc.orig or exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
