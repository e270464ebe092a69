"""How the database queue reaches its database: statements as text, through one interface.

:class:`DatabaseQueue` runs the SQL of :mod:`mq_transaction.database_sql` through a
:class:`Connections`:

- :class:`DriverConnections`, the queue's own psycopg 3 connections (``mq.queue_url``
  naming the default driver): no SQLAlchemy is imported, so a sender starts in a third of
  the CPU time;
- :class:`~mq_transaction.database_engine.EngineConnections`, an SQLAlchemy engine: the
  application's (``DatabaseQueue(engine)``) or one made for another driver (psycopg2).

Both run single statements in autocommit, and short transactions; both turn connection
trouble (a restart, a fail-over, a network cut) into :class:`QueueUnavailableError`
naming what was being done. Any other error of the database is raised as the driver (or
SQLAlchemy) raised it; ``database_errors`` names those classes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .database_url import DatabaseURL
from .errors import QueueUnavailableError

#: Idle connections a pool keeps for the next statement (more are opened when needed and
#: closed when handed back).
POOL_KEEPS = 6

#: Connections a forked child inherited: kept referenced so that they are never closed
#: from the child (closing one would end the parent's conversation with the server).
_INHERITED: list[Any] = []


class Statements(Protocol):
    """Runs statements inside one transaction (:meth:`Connections.transaction`)."""

    def run(self, sql: str, params: dict[str, Any] | None = None) -> tuple[int, list[Any]]:
        """Run ``sql``; return its row count and the rows it returned, as tuples."""


class Connections(Protocol):
    """The database queue's way to its database (see the module's docstring)."""

    #: The exception classes of the database's refusals (not connection trouble).
    database_errors: tuple[type[BaseException], ...]
    #: The database's URL, its password masked.
    location: str
    #: The database's URL, password included (for a driver or an engine only).
    url: str

    def run(
        self, sql: str, params: dict[str, Any] | None = None, *, doing: str, durable: bool = True
    ) -> tuple[int, list[Any]]:
        """Run one statement in autocommit; its row count and rows. ``durable=False``: it
        need not wait for the WAL flush (a claim: the next durable commit flushes it)."""

    def transaction(self, doing: str) -> Any:
        """A context manager: a transaction, committed at its end, yielding :class:`Statements`."""

    def listen_connection(self) -> Any:
        """A new driver connection in autocommit, for ``LISTEN``: the caller's, never pooled."""

    def after_fork_in_child(self) -> None:
        """Forget the connections a forked child inherited, without closing them."""

    def dispose(self) -> None:
        """Close the pooled connections."""


class ConnectionCut(QueueUnavailableError):
    """A pooled connection turned out to be cut (the pool is emptied): a new one may work."""


def unavailable(location: str, doing: str, reason: str, cut: bool = False) -> QueueUnavailableError:
    """The error for a database that cannot be used while ``doing`` (``cut``: a pooled
    connection was found cut, :class:`ConnectionCut`)."""
    return (ConnectionCut if cut else QueueUnavailableError)(
        f"the queue database {location} cannot be used while {doing}: {reason}"
    )


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (the driver's messages run over several)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Pool:
    """Idle psycopg connections, taken by one statement (or transaction) at a time."""

    def __init__(self, url: DatabaseURL, **args: Any) -> None:
        import psycopg

        self._connect = psycopg.connect
        self._idle_status = psycopg.pq.TransactionStatus.IDLE
        self._url = url
        self._args = url.connect_args(autocommit=True, **args)
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def connect(self) -> Any:
        return self._connect(self._url.libpq_uri(), **self._args)

    def take(self) -> tuple[Any, bool]:
        """A connection, and whether it was pooled (False: made now)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self.connect(), False

    def give_back(self, connection: Any) -> None:
        reusable = not connection.closed and connection.info.transaction_status == self._idle_status
        if reusable:
            with self._lock:
                if len(self._idle) < POOL_KEEPS:
                    self._idle.append(connection)
                    return
        connection.close()

    def drop_idle(self) -> None:
        """Close every idle connection: after one died, the others most likely did too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            try:
                connection.close()
            except Exception:  # noqa: BLE001, S110 - it is gone either way
                pass

    def forget_idle(self) -> None:
        with self._lock:
            _INHERITED.extend(self._idle)
            self._idle = []


class _DriverStatements:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def run(self, sql: str, params: dict[str, Any] | None = None) -> tuple[int, list[Any]]:
        with self._connection.cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount), cursor.fetchall() if cursor.description is not None else []


class DriverConnections:
    """The queue's own psycopg 3 connections, in autocommit: one pool for statements
    that must be durable when they return, one (``synchronous_commit=off``) for those
    that need not be."""

    def __init__(self, url: DatabaseURL) -> None:
        import psycopg

        self.database_errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        self.location = url.masked
        self.url = url.text
        self._durable = _Pool(url)
        # the URL's own options (a search_path, say) kept: both pools must see the same tables
        options = f"{url.query.get('options', '')} -c synchronous_commit=off".strip()
        self._fast = _Pool(url, options=options)

    def run(
        self, sql: str, params: dict[str, Any] | None = None, *, doing: str, durable: bool = True
    ) -> tuple[int, list[Any]]:
        with self._connection(self._durable if durable else self._fast, doing) as connection:
            return _DriverStatements(connection).run(sql, params)

    @contextmanager
    def transaction(self, doing: str) -> Iterator[_DriverStatements]:
        with self._connection(self._durable, doing) as connection, connection.transaction():
            yield _DriverStatements(connection)

    @contextmanager
    def _connection(self, pool: _Pool, doing: str) -> Iterator[Any]:
        import psycopg

        try:
            connection, pooled = pool.take()
        except psycopg.Error as exc:  # cannot connect: a restart, a fail-over, a wrong host
            raise unavailable(self.location, doing, first_line(exc)) from exc
        try:
            yield connection
        except psycopg.Error as exc:
            trouble = connection.broken or isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
            if not trouble:
                raise
            if connection.broken:
                pool.drop_idle()  # the pool's other connections were most likely cut too
            raise unavailable(self.location, doing, first_line(exc), cut=pooled and connection.broken) from exc
        finally:
            pool.give_back(connection)

    def listen_connection(self) -> Any:
        return self._durable.connect()

    def after_fork_in_child(self) -> None:
        self._durable.forget_idle()
        self._fast.forget_idle()

    def dispose(self) -> None:
        self._durable.drop_idle()
        self._fast.drop_idle()
