"""Beside zope.sqlalchemy in one transaction: the database commits (inside its vote)
before the mail is published, so a database failure leaves no mail behind.

The app's database is SQLite; the mail queue is ``queue_backend``'s: every test runs on the
directory queue and on the database queue in its own-connection mode (its own PostgreSQL
connection, joined by our data manager beside zope.sqlalchemy's).
"""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
import transaction
import zope.sqlalchemy
from queue_backends import staged
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session

from mq_transaction import QueuedMailer
from mq_transaction.states import MessageState

MESSAGE = b"From: app@example.com\r\nTo: bob@example.com\r\nSubject: signup\r\n\r\nWelcome.\r\n"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id = sa.Column(sa.Integer, primary_key=True)
    email = sa.Column(sa.String, unique=True, nullable=False)


class Signup(Base):
    """A deferred foreign key is checked by SQLite only at COMMIT, which zope.sqlalchemy's
    one-phase manager runs inside its tpc_vote: a real database veto in the vote."""

    __tablename__ = "signups"
    id = sa.Column(sa.Integer, primary_key=True)
    user_id = sa.Column(sa.Integer, sa.ForeignKey("users.id", deferrable=True, initially="DEFERRED"))


metadata = Base.metadata


@pytest.fixture
def engine(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.sqlite'}")

    @sa.event.listens_for(engine, "connect")
    def foreign_keys_on(connection, _record):
        connection.execute("PRAGMA foreign_keys=ON")

    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def tm():
    """An explicit manager, as pyramid_tm gives each request (``request.tm``)."""
    return transaction.TransactionManager(explicit=True)


@pytest.fixture
def session(engine, tm):
    session = Session(engine)
    zope.sqlalchemy.register(session, transaction_manager=tm)
    yield session
    session.close()


@pytest.fixture
def mailer(queue_backend, tm):
    return QueuedMailer(queue_backend.queue, transaction_manager=tm, default_sender="app@example.com")


def listing(mailer, place: str) -> list[str]:
    """The staged messages (``tmp``: files in tmp/, staged rows) or the published ones (``new``)."""
    if place == "tmp":
        return staged(mailer.queue)
    return sorted(entry.queue_id for entry in mailer.queue.entries(MessageState.QUEUED))


def committed(engine, sql: str) -> list[tuple]:
    """Rows as committed on disk, read through a connection of its own (not from the
    engine's pool, whose connections may hold a transaction SQLAlchemy left open)."""
    connection = sqlite3.connect(engine.url.database)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def emails(engine) -> list[str]:
    return [email for (email,) in committed(engine, "SELECT email FROM users ORDER BY id")]


def test_database_commit_and_mail_both_happen(engine, tm, session, mailer):
    with tm:
        session.add(User(email="bob@example.com"))
        queue_id = mailer.send(MESSAGE)
    assert emails(engine) == ["bob@example.com"]
    assert listing(mailer, "new") == [queue_id]
    assert listing(mailer, "tmp") == []


def test_database_failing_in_its_vote_leaves_no_mail_in_new_or_tmp(engine, tm, session, mailer):
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        with tm:
            session.add(Signup(user_id=999))  # no such user: fails at COMMIT
            session.flush()
            mailer.send(MESSAGE)
            assert len(listing(mailer, "tmp")) == 1  # written and durable before the vote
    assert listing(mailer, "new") == []
    assert listing(mailer, "tmp") == []
    assert committed(engine, "SELECT * FROM signups") == []


def test_unique_violation_during_the_request_leaves_no_mail(engine, tm, session, mailer):
    with tm:
        session.add(User(email="bob@example.com"))
    with pytest.raises(IntegrityError, match="UNIQUE"):
        with tm:
            mailer.send(MESSAGE)
            session.add(User(email="bob@example.com"))
    assert listing(mailer, "new") == []
    assert listing(mailer, "tmp") == []
    assert emails(engine) == ["bob@example.com"]


def test_database_commit_raising_in_the_vote_leaves_no_mail(engine, tm, session, mailer, monkeypatch):
    def failing_commit(self):
        raise sa.exc.OperationalError("COMMIT", {}, Exception("database is locked"))

    monkeypatch.setattr(sa.orm.SessionTransaction, "commit", failing_commit)
    with pytest.raises(sa.exc.OperationalError):
        with tm:
            session.add(User(email="carol@example.com"))
            mailer.send(MESSAGE)
    monkeypatch.undo()
    assert listing(mailer, "new") == []
    assert listing(mailer, "tmp") == []
    assert emails(engine) == []


def test_the_row_is_committed_before_the_mail_is_published(engine, tm, session, mailer, monkeypatch):
    seen_at_publish = []
    publish = mailer.queue.publish

    def checking_publish(queue_ids):
        seen_at_publish.append(emails(engine))  # another connection: sees only committed rows
        return publish(queue_ids)

    monkeypatch.setattr(mailer.queue, "publish", checking_publish)
    with tm:
        session.add(User(email="dave@example.com"))
        mailer.send(MESSAGE)
    assert seen_at_publish == [["dave@example.com"]]
    assert len(listing(mailer, "new")) == 1


def test_commit_order_is_mail_vote_then_database_vote_then_mail_publish(tm, session, mailer, monkeypatch):
    from mq_transaction.datamanager import MailDataManager

    order = []

    def spy(cls, method, name):
        original = getattr(cls, method)

        def wrapper(self, txn):
            order.append(name)
            return original(self, txn)

        monkeypatch.setattr(cls, method, wrapper)

    spy(MailDataManager, "tpc_vote", "mail vote")
    spy(MailDataManager, "tpc_finish", "mail publish")
    spy(zope.sqlalchemy.datamanager.SessionDataManager, "tpc_vote", "database commit")
    with tm:
        session.add(User(email="erin@example.com"))
        mailer.send(MESSAGE)
    assert order == ["mail vote", "database commit", "mail publish"]
