"""The database queue's SQL, as text for the driver: table names, schema version, statements.

Every statement :class:`~mq_transaction.database_queue.DatabaseQueue` runs is here, in the
``%(name)s`` parameter style that psycopg 3 and psycopg2 share, so that the queue runs the
same text on its own psycopg connections (no SQLAlchemy: a sender starts in a third of the
time, ``bench/README.md``) and through SQLAlchemy on an application's engine or session
connection (``exec_driver_sql``). Only constants are formatted into the text, never values.
The tables themselves (their DDL, ``mq-queue init-db``) are in
:mod:`mq_transaction.database_schema`.
"""

from __future__ import annotations

from .errors import ConfigurationError
from .states import MessageState

#: The version of the tables this code reads and writes.
SCHEMA_VERSION = 1

#: ``state`` of a message whose transaction has not committed yet (not a MessageState:
#: no sender and no operator command ever sees it).
STAGED = "staged"

#: The settings key named in schema errors.
URL_KEY = "mq.queue_url"

MESSAGES = "mq_messages"
SCHEMA = "mq_schema"

#: The ``LISTEN``/``NOTIFY`` channel; the payload is empty (a wake-up, never the message).
NOTIFY_CHANNEL = "mq_transaction_queued"

#: ``lease_owner`` of a message moved in from a queue directory and not published yet
#: (``staged``), followed by the state it will have (``mq-queue import-dir``).
IMPORT_OWNER = "import-dir:"

_QUEUED, _DEFERRED = MessageState.QUEUED.value, MessageState.DEFERRED.value
_SENDING, _CORRUPT = MessageState.SENDING.value, MessageState.CORRUPT.value

# -- conditions ---------------------------------------------------------------------------------

#: No live lease: never claimed, or its sender's lease ran out.
_UNLEASED = "(lease_until IS NULL OR lease_until < now())"
#: Still this sender's claim: ``claimed_id`` and ``owner`` are bound.
_CLAIMED = f"queue_id = %(claimed_id)s AND state = '{_SENDING}' AND lease_owner = %(owner)s"
#: The rows ``import-dir`` stored and has not published yet (``staged``, owned by it).
HALF_IMPORTED = f"state = '{STAGED}' AND starts_with(lease_owner, '{IMPORT_OWNER}')"
#: ``claim_timeout`` seconds from now.
_LEASE_UNTIL = "now() + make_interval(secs => CAST(%(claim_timeout)s AS DOUBLE PRECISION))"
#: Bytes a message takes (its envelope and its message), as ``mq-queue list`` shows them.
_SIZE = "octet_length(message) + octet_length(CAST(envelope AS TEXT))"
_IDS = "ANY(CAST(%(queue_ids)s AS TEXT[]))"

# -- the schema ---------------------------------------------------------------------------------

#: Which of the two tables exist in the connection's current schema.
TABLES_PRESENT = (
    "SELECT tablename FROM pg_catalog.pg_tables "
    f"WHERE schemaname = current_schema() AND tablename IN ('{MESSAGES}', '{SCHEMA}')"
)
SCHEMA_VERSIONS = f"SELECT version FROM {SCHEMA}"
RECORD_SCHEMA_VERSION = f"INSERT INTO {SCHEMA} (version) VALUES ({SCHEMA_VERSION})"
#: Serialises concurrent ``init-db`` runs (an arbitrary constant: "mq" + version 1).
INIT_LOCK = f"SELECT pg_advisory_xact_lock({0x6D71_0001})"
MAY_WRITE = f"SELECT has_table_privilege('{MESSAGES}', 'INSERT, UPDATE, DELETE')"
#: What identifies one database on one running server, whatever the route to it.
IDENTITY = (
    "SELECT current_database(), (SELECT oid FROM pg_database WHERE datname = current_database()), "
    "pg_postmaster_start_time()"
)

# -- the application's side ---------------------------------------------------------------------

INSERT = (
    f"INSERT INTO {MESSAGES} (queue_id, state, state_since, due_at, envelope, message) "
    "VALUES (%(queue_id)s, %(state)s, %(state_since)s, %(due_at)s, CAST(%(envelope)s AS JSONB), %(message)s)"
)
NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"
#: One statement, so queueing in the app's transaction costs one round trip.
INSERT_AND_NOTIFY = (
    f"WITH inserted AS ({INSERT} RETURNING queue_id) SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM inserted"
)
PUBLISH = (
    f"UPDATE {MESSAGES} SET state = '{_QUEUED}', due_at = now(), state_since = now() "
    f"WHERE queue_id = {_IDS} AND state = '{STAGED}' RETURNING queue_id"
)
DISCARD = f"DELETE FROM {MESSAGES} WHERE queue_id = {_IDS} AND state = '{STAGED}'"
#: Staged rows older than ``before`` (their process died mid-request), except the half-imported.
CLEAN_UP = (
    f"DELETE FROM {MESSAGES} WHERE state = '{STAGED}' AND state_since < %(before)s "
    f"AND (lease_owner IS NULL OR NOT starts_with(lease_owner, '{IMPORT_OWNER}')) RETURNING queue_id"
)
INTERRUPTED_IMPORTS = (
    f"SELECT count(*), min(queue_id) FROM {MESSAGES} WHERE {HALF_IMPORTED} AND state_since < %(before)s"
)

# -- the sender's side --------------------------------------------------------------------------

RECOVER_STALE_CLAIMS = (
    f"UPDATE {MESSAGES} SET state = '{_QUEUED}', due_at = now(), state_since = now(), lease_owner = NULL, "
    f"lease_until = NULL WHERE state = '{_SENDING}' AND lease_until < now() RETURNING queue_id"
)
DUE = (
    f"SELECT queue_id FROM {MESSAGES} WHERE (state = '{_QUEUED}' OR (state = '{_DEFERRED}' AND due_at <= %(now)s)) "
    f"AND {_UNLEASED} ORDER BY queue_id"
)
DUE_ALL = (
    f"SELECT queue_id FROM {MESSAGES} WHERE (state = '{_QUEUED}' OR state = '{_DEFERRED}') "
    f"AND {_UNLEASED} ORDER BY queue_id"
)
OTHER_SENDERS = f"SELECT queue_id FROM {MESSAGES} WHERE state = '{_SENDING}' AND lease_owner <> %(owner)s LIMIT 1"
NEXT_RETRY = f"SELECT min(due_at) FROM {MESSAGES} WHERE state = '{_DEFERRED}'"
#: Every listed message still due and free, in one statement: the row locks of ``SKIP
#: LOCKED`` are held only while it runs; a row another sender holds, or took since it was
#: listed, is skipped.
CLAIM = (
    f"UPDATE {MESSAGES} SET state = '{_SENDING}', state_since = now(), lease_owner = %(owner)s, "
    f"lease_until = {_LEASE_UNTIL} WHERE queue_id IN (SELECT queue_id FROM {MESSAGES} WHERE queue_id = {_IDS} "
    f"AND (state = '{_QUEUED}' OR state = '{_DEFERRED}') AND {_UNLEASED} ORDER BY queue_id FOR UPDATE SKIP LOCKED) "
    "RETURNING queue_id, CAST(envelope AS TEXT), message"
)
TO_CORRUPT = (
    f"UPDATE {MESSAGES} SET state = '{_CORRUPT}', state_since = now(), due_at = NULL, lease_owner = NULL, "
    "lease_until = NULL WHERE queue_id = %(queue_id)s"
)
DELETE_CLAIMED = f"DELETE FROM {MESSAGES} WHERE {_CLAIMED}"
#: A claimed message to ``new_state`` due at ``due_at``, with ``envelope_json`` stored unless NULL.
SETTLE_CLAIMED = (
    f"UPDATE {MESSAGES} SET state = %(new_state)s, state_since = now(), due_at = CAST(%(due_at)s AS TIMESTAMPTZ), "
    "lease_owner = NULL, lease_until = NULL, envelope = coalesce(CAST(%(envelope_json)s AS JSONB), envelope) "
    f"WHERE {_CLAIMED}"
)
#: A claimed message back to ``queued``, due at once, with ``envelope_json`` stored unless NULL.
REQUEUE_CLAIMED = (
    f"UPDATE {MESSAGES} SET state = '{_QUEUED}', state_since = now(), due_at = now(), lease_owner = NULL, "
    f"lease_until = NULL, envelope = coalesce(CAST(%(envelope_json)s AS JSONB), envelope) WHERE {_CLAIMED}"
)
RELEASE = f"UPDATE {MESSAGES} SET lease_until = now() WHERE queue_id = %(queue_id)s AND lease_owner = %(owner)s"
RENEW_LEASES = (
    f"UPDATE {MESSAGES} SET lease_until = {_LEASE_UNTIL} WHERE queue_id = {_IDS} AND lease_owner = %(owner)s "
    "RETURNING queue_id"
)

# -- the operator's side ------------------------------------------------------------------------

ENTRIES = (
    f"SELECT queue_id, state, state_since, due_at, {_SIZE} FROM {MESSAGES} WHERE state <> '{STAGED}' ORDER BY queue_id"
)
ENTRIES_IN_STATE = (
    f"SELECT queue_id, state, state_since, due_at, {_SIZE} FROM {MESSAGES} WHERE state <> '{STAGED}' "
    "AND state = %(state)s ORDER BY queue_id"
)
FIND = (
    f"SELECT queue_id, state, state_since, due_at, {_SIZE} FROM {MESSAGES} "
    f"WHERE queue_id = %(queue_id)s AND state <> '{STAGED}'"
)
READ = f"SELECT CAST(envelope AS TEXT), message FROM {MESSAGES} WHERE queue_id = %(queue_id)s AND state <> '{STAGED}'"
LOCK = f"{READ} AND {_UNLEASED} FOR UPDATE SKIP LOCKED"
TAKE_LEASE = (
    f"UPDATE {MESSAGES} SET lease_owner = %(owner)s, lease_until = {_LEASE_UNTIL} WHERE queue_id = %(queue_id)s"
)
#: A locked message from ``source`` to ``target``: due at once (``due_now``), else at
#: ``due_at``; its envelope replaced by ``envelope_json`` unless NULL.
MOVE_LOCKED = (
    f"UPDATE {MESSAGES} SET state = %(target)s, state_since = now(), "
    "due_at = CASE WHEN %(due_now)s THEN now() ELSE CAST(%(due_at)s AS TIMESTAMPTZ) END, "
    "lease_owner = NULL, lease_until = NULL, envelope = coalesce(CAST(%(envelope_json)s AS JSONB), envelope) "
    "WHERE queue_id = %(queue_id)s AND state = %(source)s AND lease_owner = %(owner)s"
)
REMOVE_LOCKED = (
    f"DELETE FROM {MESSAGES} WHERE queue_id = %(queue_id)s AND state = %(source)s AND lease_owner = %(owner)s"
)

# -- moving a queue directory's mail in (mq-queue import-dir) -----------------------------------

STAGE_IMPORT = (
    f"INSERT INTO {MESSAGES} (queue_id, state, state_since, due_at, lease_owner, envelope, message) "
    f"VALUES (%(queue_id)s, '{STAGED}', now(), %(due_at)s, %(owner)s, CAST(%(envelope)s AS JSONB), %(message)s) "
    "ON CONFLICT (queue_id) DO NOTHING"
)
FINISH_IMPORT = (
    f"UPDATE {MESSAGES} SET state = substr(lease_owner, {len(IMPORT_OWNER) + 1}), state_since = now(), "
    f"lease_owner = NULL, lease_until = NULL WHERE queue_id = %(queue_id)s AND {HALF_IMPORTED} RETURNING state"
)
PENDING_IMPORTS = f"SELECT queue_id, lease_owner FROM {MESSAGES} WHERE {HALF_IMPORTED} ORDER BY queue_id"


def missing_tables(location: str) -> ConfigurationError:
    """The error for a database without the queue's tables: it says to run ``init-db``."""
    return ConfigurationError(
        URL_KEY,
        f"the database {location} has no mail queue tables: run `mq-queue --queue-url URL init-db` "
        "(or `mq-queue CONFIG_URI init-db`) once to create them, or apply `mq-queue init-db --sql` "
        "through your migrations",
    )


def wrong_version(found: object, where: str) -> ConfigurationError:
    """The error for tables of another schema version than :data:`SCHEMA_VERSION`."""
    return ConfigurationError(
        URL_KEY,
        f"the mail queue tables{where} have schema version {found}, this mq_transaction needs version "
        f"{SCHEMA_VERSION}: run `mq-queue init-db` from a matching release, or migrate the tables",
    )


def missing_extra(exc: ImportError) -> ConfigurationError:
    """The error for a database queue without its libraries (psycopg, SQLAlchemy)."""
    return ConfigurationError(
        URL_KEY,
        f"the database queue needs the postgresql extra: pip install 'mq_transaction[postgresql]' ({exc})",
    )
