"""pyramid_retry: a retried request queues its mail once, from the attempt that succeeded."""

from __future__ import annotations

import pytest
from pyramid.response import Response
from pyramid_retry import RetryableException, mark_error_retryable

from mq_pyramid.testing import get_outbox


class FlakyDatabaseError(Exception):
    """Stands for a serialization failure the database asks us to retry."""


class RenderedFlakyError(FlakyDatabaseError):
    """The same, but the app has an exception view that renders it as a 200 page."""


class RenderedOnLastAttemptError(FlakyDatabaseError):
    """The same, with the exception view docs/pyramid.md recommends: last attempt only."""


mark_error_retryable(FlakyDatabaseError)


class SerializationFailure(Exception):
    """Not marked retryable: only a joined data manager recognises it (as zope.sqlalchemy does)."""


class RetryAwareResource:
    """A data manager that, like zope.sqlalchemy's, says which errors deserve a retry."""

    def __init__(self, manager):
        self.transaction_manager = manager

    def should_retry(self, error):
        return isinstance(error, SerializationFailure)

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_vote = tpc_finish = tpc_abort = abort

    def sortKey(self):  # noqa: N802 - the transaction API's name
        return "~retry-aware"


def retry_views(config):
    def flaky(request):
        attempt = request.environ["retry.attempt"]
        request.mailer.send(f"From: app@example.com\r\nTo: ann@example.org\r\nSubject: attempt {attempt}\r\n\r\nHi\r\n")
        if attempt < int(request.params.get("failures", "1")):
            raise (FlakyDatabaseError if request.params.get("custom") else RetryableException)("try again")
        return Response(f"done on attempt {attempt}")

    def flaky_rendered(request):
        attempt = request.environ["retry.attempt"]
        request.mailer.send(f"From: app@example.com\r\nTo: ann@example.org\r\nSubject: attempt {attempt}\r\n\r\nHi\r\n")
        if attempt == 0:
            error = RenderedOnLastAttemptError if request.params.get("last") else RenderedFlakyError
            raise error("rendered by an exception view, then retried")
        return Response("ok")

    def transient(request):
        attempt = request.environ["retry.attempt"]
        request.mailer.send(f"From: app@example.com\r\nTo: ann@example.org\r\nSubject: attempt {attempt}\r\n\r\nHi\r\n")
        manager = request.mailer.transaction_manager
        manager.get().join(RetryAwareResource(manager))
        if attempt == 0:
            raise SerializationFailure("could not serialize access")
        return Response("ok")

    config.include("pyramid_retry")
    config.add_route("flaky", "/flaky")
    config.add_view(flaky, route_name="flaky")
    config.add_route("flaky-rendered", "/flaky-rendered")
    config.add_view(flaky_rendered, route_name="flaky-rendered")
    config.add_view(lambda exc, request: Response("oops", status=200), context=RenderedFlakyError)
    config.add_view(
        lambda exc, request: Response("oops", status=200),
        context=RenderedOnLastAttemptError,
        last_retry_attempt=True,
    )
    config.add_route("transient", "/transient")
    config.add_view(transient, route_name="transient")


@pytest.fixture
def app(make_app, setup):
    return make_app(setup, settings={"retry.attempts": "3"}, extra=retry_views)


def test_request_that_fails_once_queues_exactly_one_message_from_the_successful_attempt(app):
    response = app.http.get("/flaky")
    assert response.text == "done on attempt 1"
    assert app.subjects() == ["attempt 1"]
    assert app.uncommitted() == []


def test_request_that_fails_twice_still_queues_one_message(app):
    app.http.get("/flaky", params={"failures": "2", "custom": "1"})
    assert app.subjects() == ["attempt 2"]


def test_request_that_fails_every_attempt_queues_nothing(app):
    with pytest.raises(RetryableException):
        app.http.get("/flaky", params={"failures": "3"})
    assert app.subjects() == []
    assert app.uncommitted() == []


def test_retryable_error_rendered_by_an_exception_view_is_retried_and_queues_once(app, setup):
    app.http.get("/flaky-rendered")
    if setup == "own":
        assert app.subjects() == ["attempt 1"]
    else:
        # pyramid_tm with a commit veto commits what the exception view rendered as 200,
        # then pyramid_retry runs the request again: docs/pyramid.md warns about it
        assert app.subjects() == ["attempt 0", "attempt 1"]


def test_exception_view_limited_to_the_last_attempt_queues_once_everywhere(app):
    app.http.get("/flaky-rendered", params={"last": "1"})
    assert app.subjects() == ["attempt 1"]


def test_error_a_data_manager_calls_retryable_is_retried(make_app, setup):
    app = make_app(setup, settings={"retry.attempts": "3"}, extra=retry_views)
    response = app.http.get("/transient")
    assert response.text == "ok"
    assert app.subjects() == ["attempt 1"]


def test_testing_outbox_sees_only_the_successful_attempt(make_app, setup):
    app = make_app(
        setup,
        settings={"mq.queue_dir": None, "retry.attempts": "3"},
        includes=("mq_pyramid.testing",),
        extra=retry_views,
    )
    app.http.get("/flaky")
    assert [message.email["Subject"] for message in get_outbox(app.registry)] == ["attempt 1"]
