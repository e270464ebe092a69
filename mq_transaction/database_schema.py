"""The database queue's tables, their DDL, and the schema version check (``mq-queue init-db``).

Two tables, made by :func:`init_db` (or by the SQL :func:`ddl` prints, for Alembic users):

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

from .errors import ConfigurationError
from .states import STATES, MessageState

#: The version of the tables this code reads and writes.
SCHEMA_VERSION = 1

#: ``state`` of a message whose transaction has not committed yet (not a MessageState:
#: no sender and no operator command ever sees it).
STAGED = "staged"

#: The settings key named in schema errors.
URL_KEY = "mq.queue_url"

metadata = sa.MetaData()

messages = sa.Table(
    "mq_messages",
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

schema = sa.Table("mq_schema", metadata, sa.Column("version", sa.Integer, nullable=False))

#: Serialises concurrent ``init-db`` runs (an arbitrary constant: "mq" + version 1).
_INIT_LOCK = 0x6D71_0001


def ddl() -> str:
    """The SQL that ``init_db`` runs, as a script (``mq-queue init-db --sql``)."""
    dialect = postgresql.dialect()
    statements = [
        str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip() for table in metadata.sorted_tables
    ]
    for table in metadata.sorted_tables:
        statements += [str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip() for index in table.indexes]
    statements.append(f"INSERT INTO {schema.name} (version) VALUES ({SCHEMA_VERSION})")
    return "".join(f"{statement};\n\n" for statement in statements)


def init_db(connection: sa.Connection) -> bool:
    """Create the tables and record the schema version, unless done; return True if created.

    Idempotent, and safe when several processes run it at once (an advisory lock
    serialises them). Raises :class:`ConfigurationError` when the database holds another
    schema version. Runs in the connection's transaction; the caller commits.
    """
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_INIT_LOCK)))
    created = not sa.inspect(connection).has_table(messages.name)
    metadata.create_all(connection, checkfirst=True)
    version = connection.execute(sa.select(schema.c.version)).scalar()
    if version is None:
        connection.execute(schema.insert().values(version=SCHEMA_VERSION))
    elif version != SCHEMA_VERSION:
        raise _wrong_version(version, "")
    return created


def check_schema(connection: sa.Connection, location: str) -> None:
    """Raise :class:`ConfigurationError` unless the database holds this version's tables."""
    inspector = sa.inspect(connection)
    if not inspector.has_table(schema.name) or not inspector.has_table(messages.name):
        raise ConfigurationError(
            URL_KEY,
            f"the database {location} has no mail queue tables: run `mq-queue --queue-url URL init-db` "
            "(or `mq-queue CONFIG_URI init-db`) once to create them, or apply `mq-queue init-db --sql` "
            "through your migrations",
        )
    versions = connection.execute(sa.select(schema.c.version)).scalars().all()
    if versions != [SCHEMA_VERSION]:
        raise _wrong_version(versions[0] if len(versions) == 1 else versions, f" in {location}")


def _wrong_version(found: object, where: str) -> ConfigurationError:
    return ConfigurationError(
        URL_KEY,
        f"the mail queue tables{where} have schema version {found}, this mq_transaction needs version "
        f"{SCHEMA_VERSION}: run `mq-queue init-db` from a matching release, or migrate the tables",
    )
