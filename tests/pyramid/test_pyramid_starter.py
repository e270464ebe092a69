"""Testing an app built from the official Pyramid starter, whose fixtures never commit.

The starter's ``tests/conftest.py`` runs each test's requests in one transaction that is
begun, doomed and aborted: mail sent by views joins it and is never committed.

Directory queue only: the starter app with a queue directory; the starter with the
database queue in its own database is test_pyramid_database_queue.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import transaction
from pyramid.config import Configurator
from pyramid.response import Response
from starter_project import write_project
from webtest import TestApp

from mq_pyramid.testing import get_outbox, get_uncommitted_mail

MESSAGE = b"From: app@example.com\r\nTo: ann@example.org\r\nSubject: Hi\r\n\r\nHello\r\n"


def send_view(request):
    request.mailer.send(MESSAGE)
    return Response("sent")


def make_app(includes_first: str | None, include_next: str | None, settings: dict | None = None) -> TestApp:
    """An app that includes ``includes_first`` through ``pyramid.includes`` (as testing.ini
    does, before main() runs) and ``include_next`` from its own code."""
    settings = dict(settings or {})
    if includes_first:
        settings["pyramid.includes"] = includes_first
    with Configurator(settings=settings) as config:
        config.include("pyramid_tm")  # as the starter does; its tests set tm.active and tm.manager
        if include_next:
            config.include(include_next)
        config.add_route("send", "/send")
        config.add_view(send_view, route_name="send")
    return TestApp(config.make_wsgi_app())


def test_testing_mailer_listed_in_pyramid_includes_wins_over_the_apps_own_include():
    app = make_app("mq_pyramid.testing", "mq_pyramid")  # and no mq.queue_dir anywhere
    app.get("/send")
    [sent] = get_outbox(app.app)
    assert sent.recipients == ("ann@example.org",)


def test_testing_mailer_included_after_mq_pyramid_still_replaces_the_real_one(tmp_path):
    app = make_app("mq_pyramid", "mq_pyramid.testing", {"mq.queue_dir": str(tmp_path / "queue")})
    app.get("/send")
    assert len(get_outbox(app.app)) == 1
    assert os.listdir(tmp_path / "queue" / "new") == []


def test_mq_pyramid_alone_still_requires_a_queue_dir():
    with pytest.raises(Exception, match="mq.queue_dir"):
        make_app(None, "mq_pyramid")


def test_mail_of_a_transaction_still_open_is_uncommitted_until_it_ends():
    app = make_app("mq_pyramid.testing", None)
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    tm.doom()  # as the starter's tm fixture does
    environ = {"tm.active": True, "tm.manager": tm}
    app.get("/send", extra_environ=environ)
    app.get("/send", extra_environ=environ)
    uncommitted = get_uncommitted_mail(app.app)
    assert [m.recipients for m in uncommitted] == [("ann@example.org",), ("ann@example.org",)]
    assert get_outbox(app.app) == []
    tm.abort()
    assert get_uncommitted_mail(app.app) == []
    assert get_outbox(app.app) == []


def test_committed_mail_leaves_the_uncommitted_list_for_the_outbox():
    app = make_app("mq_pyramid.testing", None)
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    app.get("/send", extra_environ={"tm.active": True, "tm.manager": tm})
    savepoint = tm.savepoint()
    app.get("/send", extra_environ={"tm.active": True, "tm.manager": tm})
    savepoint.rollback()
    assert len(get_uncommitted_mail(app.app)) == 1
    tm.commit()
    assert get_uncommitted_mail(app.app) == []
    assert len(get_outbox(app.app)) == 1


@pytest.mark.slow
def test_the_pages_test_module_passes_in_a_project_shaped_like_the_starter(tmp_path):
    project = write_project(tmp_path / "myproject")
    env = {**os.environ, "PYTHONPATH": str(project)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
