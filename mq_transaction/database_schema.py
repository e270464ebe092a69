"""The database queue's tables and their DDL (``mq-queue init-db``), made with SQLAlchemy.

Two tables, made by :meth:`DatabaseQueue.init_db <mq_transaction.DatabaseQueue.init_db>`
from :func:`create_statements` (or by the SQL :func:`ddl` prints, for Alembic users); the
queue itself reads and writes them without SQLAlchemy (:mod:`mq_transaction.database_sql`,
which also holds the schema version check's statements):

``mq_messages``
    One row per message. ``message`` holds the exact bytes (``bytea``, never re-encoded);
    ``envelope`` the envelope and delivery record in the same JSON as a queue file's
    envelope line (sender, per-recipient status and last reply, attempts, times in UTC).
    ``state`` is a :class:`~mq_transaction.states.MessageState` value, or ``staged`` for
    the message of a transaction not committed yet (own-connection mode), or for a message
    ``mq-queue import-dir`` is moving in from a queue directory (its ``lease_owner`` then
    ``import-dir:`` and the state it will have). ``due_at`` is
    when a queued or deferred message is due (NULL in other states), ``state_since`` when
    the message entered its state. ``lease_owner``/``lease_until`` record who holds a
    claim (host name, PID and a token) and until when.

``mq_schema``
    One row: the schema version. A missing or different version stops ``mq-send``,
    ``mq-queue`` and the Pyramid app at start-up with a :class:`ConfigurationError` that
    says to run ``init-db``.

Indexes: ``mq_messages_due`` (partial, on ``due_at`` of queued and deferred rows) serves
"the next due messages" in O(log n); ``mq_messages_leases`` (partial, on ``lease_until`` of
sending rows) serves the search for claims whose sender died.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from .database_sql import MESSAGES, SCHEMA, SCHEMA_VERSION, STAGED, URL_KEY
from .states import STATES, MessageState

__all__ = ["SCHEMA_VERSION", "STAGED", "URL_KEY", "create_statements", "ddl", "messages", "metadata", "schema"]

metadata = sa.MetaData()

messages = sa.Table(
    MESSAGES,
    metadata,
    sa.Column("queue_id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("state_since", sa.DateTime(timezone=True), nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True)),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("envelope", postgresql.JSONB, nullable=False),
    sa.Column("message", sa.LargeBinary, nullable=False),
    sa.CheckConstraint(
        "state IN ({})".format(", ".join(f"'{state.value}'" for state in (*STATES,)) + f", '{STAGED}'"),
        name="mq_messages_state",
    ),
)
sa.Index(
    "mq_messages_due",
    messages.c.due_at,
    postgresql_where=messages.c.state.in_([MessageState.QUEUED.value, MessageState.DEFERRED.value]),
)
sa.Index("mq_messages_leases", messages.c.lease_until, postgresql_where=messages.c.state == MessageState.SENDING.value)

schema = sa.Table(SCHEMA, metadata, sa.Column("version", sa.Integer, nullable=False))


def create_statements() -> dict[str, list[str]]:
    """For each table, the statements that create it and its indexes (``init_db`` runs
    those of the tables that are missing)."""
    dialect = postgresql.dialect()
    return {
        table.name: [str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip()]
        + [str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip() for index in table.indexes]
        for table in metadata.sorted_tables
    }


def ddl() -> str:
    """The SQL that ``init_db`` runs, as a script (``mq-queue init-db --sql``)."""
    statements = [statement for table in create_statements().values() for statement in table]
    statements.append(f"INSERT INTO {schema.name} (version) VALUES ({SCHEMA_VERSION})")
    return "".join(f"{statement};\n\n" for statement in statements)
