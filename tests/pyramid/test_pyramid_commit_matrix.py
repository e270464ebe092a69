"""A request's mail is queued if and only if its transaction commits, whoever owns it.

Every test runs three times: under mq_pyramid's own tween, under pyramid_tm with the
thread-local manager and under pyramid_tm with explicit per-request managers (both with
``tm.commit_veto = pyramid_tm.default_commit_veto``).
"""

from __future__ import annotations

import pytest


@pytest.fixture
def app(make_app, setup):
    return make_app(setup)


def test_200_response_queues_one_message_in_new(app):
    app.http.get("/ok", status=200)
    assert app.subjects() == ["/ok"]
    assert app.uncommitted() == []


def test_unhandled_exception_queues_nothing(app):
    with pytest.raises(RuntimeError, match="the view failed after sending"):
        app.http.get("/raise")
    assert app.subjects() == []
    assert app.uncommitted() == []


@pytest.mark.parametrize("code", [500, 404, 400, 503])
def test_error_status_response_queues_nothing(app, code):
    app.http.get(f"/status/{code}", status=code)
    assert app.subjects() == []
    assert app.uncommitted() == []


def test_raised_not_found_queues_nothing(app):
    app.http.get("/raise-not-found", status=404)
    assert app.subjects() == []


@pytest.mark.parametrize("code", [201, 204, 301, 303])
def test_other_success_and_redirect_statuses_commit(app, code):
    app.http.get(f"/status/{code}", status=code)
    assert app.subjects() == [f"/status/{code}"]


def test_raised_httpfound_rendered_by_exception_view_commits(app):
    response = app.http.get("/redirect-raised", status=302)
    assert response.location.endswith("/done")
    assert app.subjects() == ["/redirect-raised"]


def test_returned_httpfound_commits(app):
    app.http.get("/redirect-returned", status=302)
    assert app.subjects() == ["/redirect-returned"]


def test_x_tm_abort_header_queues_nothing(app):
    app.http.get("/xtm/abort", status=200)
    assert app.subjects() == []
    assert app.uncommitted() == []


def test_x_tm_commit_header_commits_even_a_4xx(app):
    app.http.get("/xtm/commit", params={"status": "409"}, status=409)
    assert app.subjects() == ["/xtm/commit"]


def test_doomed_transaction_queues_nothing(app):
    app.http.get("/doom", status=200)
    assert app.subjects() == []
    assert app.uncommitted() == []


def test_several_messages_in_one_request_all_commit_in_order(app):
    app.http.get("/several", params={"n": "4"}, status=200)
    assert app.subjects() == ["/several #0", "/several #1", "/several #2", "/several #3"]


def test_several_messages_in_a_failing_request_none_is_queued(app):
    with pytest.raises(RuntimeError):
        app.http.get("/several", params={"n": "4", "fail": "1"})
    assert app.subjects() == []
    assert app.uncommitted() == []


def test_enqueue_survives_the_abort_that_discards_send(app):
    with pytest.raises(RuntimeError):
        app.http.get("/enqueue-then-raise")
    assert app.subjects() == ["/enqueue-then-raise enqueued"]
    assert app.uncommitted() == []


def test_each_request_has_its_own_transaction(app):
    app.http.get("/ok")
    with pytest.raises(RuntimeError):
        app.http.get("/raise")
    app.http.get("/xtm/abort")
    app.http.get("/ok")
    assert app.subjects() == ["/ok", "/ok"]


def test_request_mailer_joins_the_request_transaction_manager(app, setup):
    first = app.http.get("/manager").json
    assert first["active"] is True
    if setup == "own":
        # an explicit manager per request, never the thread-local one
        assert first["explicit"] is True and first["is_threadlocal"] is False
        assert first["is_request_tm"] is False
    elif setup == "tm":
        assert first["is_request_tm"] is True and first["is_threadlocal"] is True
    else:
        assert first["is_request_tm"] is True and first["explicit"] is True
        assert first["is_threadlocal"] is False
