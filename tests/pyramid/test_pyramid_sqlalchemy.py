"""Mail and a SQLAlchemy + SQLite write (zope.sqlalchemy) commit or abort together."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import zope.sqlalchemy
from pyramid.httpexceptions import HTTPFound
from pyramid.response import Response
from sqlalchemy.orm import sessionmaker

METADATA = sa.MetaData()
SIGNUPS = sa.Table("signups", METADATA, sa.Column("email", sa.String, primary_key=True), sa.Column("note", sa.String))


@pytest.fixture
def engine(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.sqlite'}")
    METADATA.create_all(engine)
    yield engine
    engine.dispose()


def database_views(engine):
    factory = sessionmaker(bind=engine)

    def dbsession(request):
        # the recommended wiring: the session joins the very manager request.mailer joins
        session = factory()
        zope.sqlalchemy.register(session, transaction_manager=request.mailer.transaction_manager)
        return session

    def signup(request):
        email = request.params["email"]
        # mail first: a database error after it must take the mail back
        request.mailer.send(f"From: app@example.com\r\nTo: {email}\r\nSubject: welcome {email}\r\n\r\nHi\r\n")
        request.dbsession.execute(SIGNUPS.insert().values(email=email))
        zope.sqlalchemy.mark_changed(request.dbsession)  # a Core statement: tell zope.sqlalchemy
        outcome = request.params.get("outcome", "ok")
        if outcome == "raise":
            raise RuntimeError("failed after the insert and the mail")
        if outcome == "redirect":
            raise HTTPFound(location="/")
        return Response(outcome, status=int(request.params.get("status", "200")))

    def extra(config):
        config.add_request_method(dbsession, "dbsession", reify=True)
        config.add_route("signup", "/signup")
        config.add_view(signup, route_name="signup")

    return extra


def rows(engine) -> list[str]:
    with engine.connect() as connection:
        return [row.email for row in connection.execute(sa.select(SIGNUPS.c.email).order_by(SIGNUPS.c.email))]


@pytest.fixture
def app(make_app, setup, engine):
    return make_app(setup, extra=database_views(engine))


def test_success_commits_row_and_mail(app, engine):
    app.http.get("/signup", params={"email": "ann@example.org"})
    assert rows(engine) == ["ann@example.org"]
    assert app.subjects() == ["welcome ann@example.org"]


def test_raised_redirect_commits_row_and_mail(app, engine):
    app.http.get("/signup", params={"email": "ann@example.org", "outcome": "redirect"}, status=302)
    assert rows(engine) == ["ann@example.org"]
    assert app.subjects() == ["welcome ann@example.org"]


def test_exception_aborts_row_and_mail(app, engine):
    with pytest.raises(RuntimeError):
        app.http.get("/signup", params={"email": "ann@example.org", "outcome": "raise"})
    assert rows(engine) == []
    assert app.subjects() == []
    assert app.uncommitted() == []


@pytest.mark.parametrize("status", [404, 500])
def test_error_status_aborts_row_and_mail(app, engine, status):
    app.http.get("/signup", params={"email": "ann@example.org", "status": str(status)}, status=status)
    assert rows(engine) == []
    assert app.subjects() == []


def test_database_error_after_the_mail_was_sent_aborts_the_mail(app, engine):
    app.http.get("/signup", params={"email": "ann@example.org"})
    with pytest.raises(sa.exc.IntegrityError):
        app.http.get("/signup", params={"email": "ann@example.org"})  # same key again
    assert rows(engine) == ["ann@example.org"]
    assert app.subjects() == ["welcome ann@example.org"]
    assert app.uncommitted() == []


def test_database_failure_in_the_commit_aborts_the_mail(make_app, setup, engine):
    """The database refuses its COMMIT (in zope.sqlalchemy's vote): no mail, though the view returned 200."""
    failing = sa.create_engine(engine.url)

    @sa.event.listens_for(failing, "commit")
    def refuse(connection):
        raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    app = make_app(setup, extra=database_views(failing))
    with pytest.raises(sa.exc.OperationalError):
        app.http.get("/signup", params={"email": "ann@example.org"})
    assert app.subjects() == []
    assert app.uncommitted() == []
    failing.dispose()
