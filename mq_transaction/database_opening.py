"""Open the database queue that ``mq.queue_url`` names (its libraries are imported only here, when used)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .database_sql import missing_extra
from .errors import ConfigurationError, QueueUnavailableError
from .settings import Settings

if TYPE_CHECKING:
    from .database_queue import DatabaseQueue


def open_database_queue(settings: Settings, *, check_schema: bool = True, wait: bool = False) -> DatabaseQueue:
    """The :class:`~mq_transaction.DatabaseQueue` at ``mq.queue_url``.

    With ``check_schema`` (the default; ``init-db`` turns it off) the tables must exist in
    this release's version: a :class:`ConfigurationError` says to run ``init-db``
    otherwise, and :class:`~mq_transaction.errors.QueueUnavailableError` is raised when the
    database cannot be reached. With ``wait`` (``mq-send --daemon``) a database that cannot
    be reached is no error: the queue checks its tables at its first use once connected,
    and raises that :class:`ConfigurationError` then.
    """
    if not settings.queue_url:
        raise ConfigurationError("mq.queue_url", "missing: set it to the PostgreSQL database of the queue")
    try:
        from .database_queue import DatabaseQueue
    except ImportError as exc:
        raise missing_extra(exc) from None
    queue = DatabaseQueue(settings.queue_url, claim_timeout=settings.claim_timeout)
    if check_schema:
        try:
            queue.check_schema()
        except QueueUnavailableError:
            if not wait:
                raise
    return queue


def database_ddl() -> str:
    """The SQL that creates the database queue's tables (``mq-queue init-db --sql``)."""
    try:
        from .database_schema import ddl
    except ImportError as exc:
        raise missing_extra(exc) from None
    return ddl()
