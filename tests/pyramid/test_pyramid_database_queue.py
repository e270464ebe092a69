"""A cookiecutter-style Pyramid app (pyramid_tm, zope.sqlalchemy, ``request.dbsession``) on a
database queue in its own PostgreSQL database: ``mq.queue_url`` + ``mq.queue_session``.

The mail row commits in the app's own database commit: with the app's rows, or not at all.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import zope.sqlalchemy
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.response import Response
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from webtest import TestApp

from mq_transaction import DatabaseQueue


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = (sa.UniqueConstraint("email", name="users_email", deferrable=True, initially="DEFERRED"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]


def make_app(url: str, engine: sa.Engine) -> TestApp:
    """The starter's wiring: request.dbsession joined to request.tm by zope.sqlalchemy."""
    session_factory = sessionmaker(engine)

    def dbsession(request):
        session = session_factory()
        zope.sqlalchemy.register(session, transaction_manager=request.tm)
        return session

    def signup(request):
        for email in request.params.getall("email"):
            request.dbsession.add(User(email=email))
        request.mailer.send(
            f"From: app@example.com\r\nTo: {request.params['email']}\r\nSubject: welcome\r\n\r\nHi.\r\n",
        )
        if request.params.get("fail"):
            raise RuntimeError("the view failed after the insert and the mail")
        return Response("ok")

    settings = {
        "mq.queue_url": url,
        "mq.queue_session": "dbsession",
        "mq.default_sender": "app@example.com",
        "tm.manager_hook": "pyramid_tm.explicit_manager",
    }
    with Configurator(settings=settings) as config:
        config.include("pyramid_tm")
        config.include("mq_pyramid")
        config.add_request_method(dbsession, "dbsession", reify=True)
        config.add_route("signup", "/signup")
        config.add_view(signup, route_name="signup")
        return TestApp(config.make_wsgi_app())


@pytest.fixture
def engine(postgres_url):
    engine = sa.create_engine(postgres_url)
    Base.metadata.create_all(engine)
    DatabaseQueue(engine).init_db()
    yield engine
    engine.dispose()


@pytest.fixture
def app(postgres_url, engine):
    return make_app(postgres_url, engine)


def committed(engine: sa.Engine) -> tuple[list[str], list[str]]:
    with engine.connect() as connection:
        users = [row[0] for row in connection.execute(sa.text("select email from users order by id"))]
        mail = [row[0] for row in connection.execute(sa.text("select state from mq_messages"))]
    return users, mail


def test_the_request_commits_the_row_and_the_mail_together(app, engine):
    app.get("/signup", params={"email": "ann@example.org"})
    assert committed(engine) == (["ann@example.org"], ["queued"])


def test_a_failing_view_leaves_neither(app, engine):
    with pytest.raises(RuntimeError):
        app.get("/signup", params={"email": "ann@example.org", "fail": "1"})
    assert committed(engine) == ([], [])


def test_a_commit_refused_by_the_database_leaves_neither(app, engine):
    """Two equal emails break a deferred unique constraint: PostgreSQL refuses the COMMIT itself."""
    with pytest.raises(sa.exc.IntegrityError):
        app.get("/signup", params={"email": ["ann@example.org", "ann@example.org"]})
    assert committed(engine) == ([], [])


def test_the_mail_row_is_written_by_the_apps_own_database_transaction(app, engine):
    app.get("/signup", params={"email": "ann@example.org"})
    with engine.connect() as connection:
        app_xid = connection.execute(sa.text("select xmin::text from users")).scalar()
        mail_xid = connection.execute(sa.text("select xmin::text from mq_messages")).scalar()
    assert app_xid == mail_xid  # one PostgreSQL transaction wrote both rows


def test_include_refuses_a_database_without_the_tables(postgres_admin_url):
    with pytest.raises(ConfigurationError, match="mq.queue_url: .*init-db"):
        with Configurator(settings={"mq.queue_url": postgres_admin_url}) as config:
            config.include("mq_pyramid")
