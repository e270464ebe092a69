"""The database queue inside the app's transaction, against a real PostgreSQL server.

Same-transaction mode (``QueuedMailer(queue, session=...)``): the mail row is inserted
through the app's zope.sqlalchemy session, so it commits and aborts with the app's rows,
including when the commit itself fails. Own-connection mode (no session): the message is
staged at send() and published after the app's database committed, as the directory
queue does it.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import transaction
import zope.sqlalchemy
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from mq_transaction import ConfigurationError, NoTransactionError, QueuedMailer
from mq_transaction.database_queue import DatabaseQueue

MESSAGE = (
    b"Message-ID: <signup@example.com>\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n"
    b"From: app@example.com\r\nTo: bob@example.com\r\nSubject: signup\r\n\r\nWelcome.\r\n"
)

metadata = sa.MetaData()
# A deferred unique constraint is checked only at COMMIT, which zope.sqlalchemy runs inside
# its tpc_vote: the database itself refuses the commit.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.Text, nullable=False),
    sa.UniqueConstraint("email", name="users_email", deferrable=True, initially="DEFERRED"),
)


@pytest.fixture
def app_engine(postgres_url):
    engine = sa.create_engine(postgres_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def queue(postgres_url, app_engine):
    queue = DatabaseQueue(postgres_url)
    queue.init_db()
    yield queue
    queue.dispose()


@pytest.fixture
def tm():
    """An explicit manager, as pyramid_tm gives each request (``request.tm``)."""
    return transaction.TransactionManager(explicit=True)


@pytest.fixture
def session(app_engine, tm):
    session = Session(app_engine)
    zope.sqlalchemy.register(session, transaction_manager=tm)
    yield session
    session.close()


def add_user(session: Session, email: str) -> None:
    """An app row written with Core through the session (marked changed, as zope.sqlalchemy needs)."""
    session.execute(users.insert().values(email=email))
    zope.sqlalchemy.mark_changed(session)


def committed(engine: sa.Engine) -> tuple[list, list]:
    """(user emails, mail rows as (state, message)) as committed, read on a connection of its own."""
    with engine.connect() as connection:
        emails = [row[0] for row in connection.execute(sa.text("select email from users order by id"))]
        mail = [
            (row[0], bytes(row[1])) for row in connection.execute(sa.text("select state, message from mq_messages"))
        ]
    return emails, mail


# -- same-transaction mode -------------------------------------------------------------------------


def test_the_mail_row_commits_with_the_apps_row(queue, session, tm, app_engine):
    mailer = QueuedMailer(queue, transaction_manager=tm, session=session)
    with tm:
        add_user(session, "bob@example.com")
        queue_id = mailer.send(MESSAGE)
        assert committed(app_engine) == ([], [])  # nothing visible before the commit
    assert committed(app_engine) == (["bob@example.com"], [("queued", MESSAGE)])
    assert queue.due() == [queue_id]


def test_the_mail_row_alone_is_committed_too(queue, session, tm, app_engine):
    """zope.sqlalchemy commits a session only when marked changed: send() marks it."""
    mailer = QueuedMailer(queue, transaction_manager=tm, session=session)
    with tm:
        mailer.send(MESSAGE)
    assert committed(app_engine) == ([], [("queued", MESSAGE)])


def test_an_abort_leaves_neither_row(queue, session, tm, app_engine):
    mailer = QueuedMailer(queue, transaction_manager=tm, session=session)
    tm.begin()
    add_user(session, "bob@example.com")
    mailer.send(MESSAGE)
    tm.abort()
    assert committed(app_engine) == ([], [])


def test_a_commit_the_database_refuses_leaves_neither_row_and_no_mail(queue, session, tm, app_engine):
    mailer = QueuedMailer(queue, transaction_manager=tm, session=session)
    tm.begin()
    add_user(session, "bob@example.com")
    add_user(session, "bob@example.com")  # checked at COMMIT
    mailer.send(MESSAGE)
    with pytest.raises(IntegrityError, match="users_email"):
        tm.commit()
    tm.abort()
    assert committed(app_engine) == ([], [])
    assert queue.due() == []


def test_a_scoped_session_works_the_same(queue, app_engine, tm):
    sessions = scoped_session(sessionmaker(app_engine))
    zope.sqlalchemy.register(sessions, transaction_manager=tm)
    mailer = QueuedMailer(queue, transaction_manager=tm, session=sessions)
    with tm:
        sessions.execute(users.insert().values(email="eve@example.com"))
        mailer.send(MESSAGE)
    sessions.remove()
    assert committed(app_engine) == (["eve@example.com"], [("queued", MESSAGE)])


def test_an_app_on_psycopg2_queues_in_its_own_commit(queue, postgres_url, app_engine, tm):
    engine = sa.create_engine(sa.make_url(postgres_url).set(drivername="postgresql+psycopg2"))
    session = Session(engine)
    zope.sqlalchemy.register(session, transaction_manager=tm)
    mailer = QueuedMailer(queue, transaction_manager=tm, session=session)
    with tm:
        add_user(session, "old@example.com")
        mailer.send(MESSAGE)
    session.close()
    engine.dispose()
    assert committed(app_engine) == (["old@example.com"], [("queued", MESSAGE)])


def test_a_session_on_another_database_is_refused_at_the_first_send(queue, postgres_admin_url, tm, app_engine):
    other = sa.create_engine(postgres_admin_url)
    session = Session(other)
    zope.sqlalchemy.register(session, transaction_manager=tm)
    mailer = QueuedMailer(queue, transaction_manager=tm, session=session)
    tm.begin()
    with pytest.raises(ConfigurationError, match="not the queue's database"):
        mailer.send(MESSAGE)
    tm.abort()
    session.close()
    other.dispose()
    assert committed(app_engine) == ([], [])


def test_send_without_a_transaction_is_refused(queue, session, tm):
    mailer = QueuedMailer(queue, transaction_manager=tm, session=session)
    with pytest.raises(NoTransactionError):
        mailer.send(MESSAGE)


def test_a_session_needs_a_database_queue(tmp_path, session):
    with pytest.raises(TypeError, match="needs a DatabaseQueue"):
        QueuedMailer(tmp_path / "queue", session=session)


# -- own-connection mode ----------------------------------------------------------------------------


def test_own_connection_mail_is_published_when_the_app_commits(queue, session, tm, app_engine):
    mailer = QueuedMailer(queue, transaction_manager=tm)
    with tm:
        add_user(session, "bob@example.com")
        queue_id = mailer.send(MESSAGE)
        assert queue.due() == []  # staged: no sender sees it yet
    assert committed(app_engine) == (["bob@example.com"], [("queued", MESSAGE)])
    assert queue.due() == [queue_id]


def test_own_connection_mail_is_removed_when_the_app_database_refuses_the_commit(queue, session, tm, app_engine):
    """The mail data manager votes before zope.sqlalchemy commits and publishes only in
    tpc_finish: a database veto in the vote aborts the staged message."""
    mailer = QueuedMailer(queue, transaction_manager=tm)
    tm.begin()
    add_user(session, "bob@example.com")
    add_user(session, "bob@example.com")
    mailer.send(MESSAGE)
    with pytest.raises(IntegrityError):
        tm.commit()
    tm.abort()
    assert committed(app_engine) == ([], [])


def test_own_connection_abort_discards_the_staged_message(queue, tm, app_engine):
    mailer = QueuedMailer(queue, transaction_manager=tm)
    tm.begin()
    mailer.send(MESSAGE)
    tm.abort()
    assert committed(app_engine) == ([], [])
