"""The database queue through an SQLAlchemy engine (see :mod:`mq_transaction.database_connections`).

Used for an application's engine (``DatabaseQueue(engine)``) and for URLs naming another
driver than psycopg 3 (``postgresql+psycopg2://``). The statements are the same text as
on the queue's own connections, run with ``exec_driver_sql`` (psycopg 3 and psycopg2
share the ``%(name)s`` parameter style).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from .database_connections import first_line, unavailable
from .database_url import DatabaseURL


class _EngineStatements:
    def __init__(self, connection: sa.Connection) -> None:
        self._connection = connection

    def run(self, sql: str, params: dict[str, Any] | None = None) -> tuple[int, list[Any]]:
        result = self._connection.exec_driver_sql(sql, params or {})
        return int(result.rowcount), [tuple(row) for row in result] if result.returns_rows else []


class EngineConnections:
    """Statements through ``engine``: in autocommit (an execution option, so that the
    application's pooled connections are left as they were), or in short transactions."""

    database_errors: tuple[type[BaseException], ...] = (sa.exc.DBAPIError,)

    def __init__(self, engine: sa.Engine, *, owned: bool) -> None:
        self.engine = engine
        self.location = engine.url.render_as_string(hide_password=True)
        self.url = engine.url.render_as_string(hide_password=False)
        self._owned = owned
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    def from_url(cls, url: DatabaseURL) -> EngineConnections:
        """An engine of the queue's own for ``url`` (a driver other than psycopg 3)."""
        engine = sa.create_engine(url.text, pool_size=6, max_overflow=10, connect_args=url.connect_args())
        return cls(engine, owned=True)

    def run(
        self, sql: str, params: dict[str, Any] | None = None, *, doing: str, durable: bool = True
    ) -> tuple[int, list[Any]]:
        """One statement in autocommit; every one waits for the WAL flush here (``durable``
        is for the queue's own connections, whose claims have a pool of their own)."""
        with self._trouble(doing), self._autocommit.connect() as connection:
            return _EngineStatements(connection).run(sql, params)

    @contextmanager
    def transaction(self, doing: str) -> Iterator[_EngineStatements]:
        with self._trouble(doing), self.engine.begin() as connection:
            yield _EngineStatements(connection)

    @contextmanager
    def _trouble(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sa.exc.DBAPIError as exc:
            trouble = exc.connection_invalidated or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
            if not trouble:
                raise
            # A cut connection (``connection_invalidated``): SQLAlchemy has emptied the pool.
            cut = bool(exc.connection_invalidated)
            raise unavailable(self.location, doing, first_line(exc.orig or exc), cut=cut) from exc

    def listen_connection(self) -> Any:
        raw = self.engine.raw_connection()
        connection: Any = raw.driver_connection
        raw.detach()  # ours for good: never handed back to the pool in LISTEN state
        connection.autocommit = True
        return connection

    def after_fork_in_child(self) -> None:
        self.engine.dispose(close=False)

    def dispose(self) -> None:
        if self._owned:
            self.engine.dispose()
