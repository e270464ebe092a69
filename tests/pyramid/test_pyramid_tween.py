"""mq_pyramid's tween: where it sits, when it steps aside, and its own commit rules."""

from __future__ import annotations

import pytest
import transaction
from pyramid.config import Configurator
from pyramid.interfaces import ITweens
from pyramid.response import Response
from pyramid.tweens import EXCVIEW

import mq_pyramid
from mq_transaction import MessageQueue, NoTransactionError

MESSAGE = b"From: app@example.com\r\nTo: ann@example.org\r\nSubject: %s\r\n\r\nHello\r\n"


def mail(request) -> bytes:
    return MESSAGE % request.path.encode()


TWEEN = "mq_pyramid.tween.mail_tween_factory"
TM = "pyramid_tm.tm_tween_factory"


def veto_everything(request, response):
    return True


def never(request):
    return False


NOT_CALLABLE = 42


def tween_order(registry) -> list[str]:
    return [name for name, _factory in registry.getUtility(ITweens).implicit()]


@pytest.mark.parametrize("includes", [("pyramid_tm", "mq_pyramid"), ("mq_pyramid", "pyramid_tm")])
def test_tween_sits_below_pyramid_tm_and_above_excview_whatever_the_include_order(tmp_path, includes):
    with Configurator(settings={"mq.queue_dir": str(tmp_path / "q")}) as config:
        for include in includes:
            config.include(include)
    order = tween_order(config.registry)
    assert order.index(TM) < order.index(TWEEN) < order.index(EXCVIEW)


def test_tween_sits_above_excview_without_pyramid_tm(tmp_path):
    with Configurator(settings={"mq.queue_dir": str(tmp_path / "q")}) as config:
        config.include("mq_pyramid")
    assert tween_order(config.registry) == [TWEEN, EXCVIEW]


def test_including_twice_adds_the_tween_once(tmp_path):
    with Configurator(settings={"mq.queue_dir": str(tmp_path / "q")}) as config:
        config.include("mq_pyramid")
        config.include("mq_pyramid")
        config.include("mq_pyramid.testing")
    assert tween_order(config.registry).count(TWEEN) == 1
    config.make_wsgi_app()  # no configuration conflict


def test_explicit_tween_list_with_pyramid_tm_below_is_refused(tmp_path):
    settings = {"mq.queue_dir": str(tmp_path / "q"), "pyramid.tweens": f"{TWEEN}\n{TM}\n{EXCVIEW}"}
    with Configurator(settings=settings) as config:
        config.include("pyramid_tm")
        config.include("mq_pyramid")
    with pytest.raises(mq_pyramid.ConfigurationError) as raised:
        config.make_wsgi_app()
    assert raised.value.key == "pyramid.tweens"


def test_explicit_tween_list_with_excview_above_is_refused(tmp_path):
    settings = {"mq.queue_dir": str(tmp_path / "q"), "pyramid.tweens": f"{EXCVIEW}\n{TWEEN}"}
    with Configurator(settings=settings) as config:
        config.include("mq_pyramid")
    with pytest.raises(mq_pyramid.ConfigurationError, match="HTTPFound"):
        config.make_wsgi_app()


def test_under_pyramid_tm_the_request_has_exactly_one_transaction(make_app):
    """The tween steps aside: the mailer joins request.tm's transaction, nothing else begins one."""
    seen = {}

    def view(request):
        request.mailer.send(mail(request))
        txn = request.tm.get()
        seen["resources"] = [type(r).__name__ for r in txn._resources]
        seen["own_manager"] = request.__dict__.get("_mq_transaction_manager")
        return Response("ok")

    def extra(config):
        config.add_route("one", "/one")
        config.add_view(view, route_name="one")

    app = make_app("tm-explicit", extra=extra)
    app.http.get("/one")
    assert seen["resources"] == ["MailDataManager"]
    assert seen["own_manager"] is None
    assert app.subjects() == ["/one"]


def test_pyramid_tm_without_a_veto_aborts_a_raised_redirect_and_the_mail_follows(make_app):
    """pyramid_tm's pitfall: its decision stands (docs recommend default_commit_veto)."""
    app = make_app("tm-no-veto")
    app.http.get("/redirect-raised", status=302)
    app.http.get("/redirect-returned", status=302)
    assert app.subjects() == ["/redirect-returned"]


def test_requests_pyramid_tm_skips_get_the_own_tween_transaction(make_app):
    app = make_app("tm", settings={"tm.activate_hook": f"{__name__}.never"})
    app.http.get("/ok")
    app.http.get("/status/500", status=500)
    with pytest.raises(RuntimeError):
        app.http.get("/raise")
    assert app.subjects() == ["/ok"]
    assert app.http.get("/manager").json["explicit"] is True


def test_error_rendered_as_200_by_an_exception_view_aborts_under_the_own_tween(make_app):
    app = make_app("own")
    response = app.http.get("/handled-error", status=200)
    assert "sorry" in response.text
    assert app.subjects() == []
    assert app.uncommitted() == []


def test_mq_commit_veto_replaces_the_default_rule(make_app):
    app = make_app("own", settings={"mq.commit_veto": f"{__name__}.veto_everything"})
    app.http.get("/ok", status=200)
    assert app.subjects() == []


def test_mq_commit_veto_is_ignored_under_pyramid_tm(make_app):
    app = make_app("tm", settings={"mq.commit_veto": f"{__name__}.veto_everything"})
    app.http.get("/ok", status=200)
    assert app.subjects() == ["/ok"]


def test_own_tween_leaves_the_thread_local_transaction_alone(make_app):
    app = make_app("own")
    transaction.begin()
    app.http.get("/ok")
    with pytest.raises(RuntimeError):
        app.http.get("/raise")
    assert transaction.get().status == "Active"  # neither committed nor aborted by a request
    transaction.abort()
    assert app.subjects() == ["/ok"]


def test_send_after_the_request_finished_raises_instead_of_losing_mail(make_app):
    kept = {}

    def view(request):
        kept["mailer"] = request.mailer
        return Response("ok")

    def extra(config):
        config.add_route("keep", "/keep")
        config.add_view(view, route_name="keep")

    app = make_app("own", extra=extra)
    app.http.get("/keep")
    with pytest.raises(NoTransactionError):
        kept["mailer"].send(b"From: a@example.com\r\nTo: b@example.com\r\n\r\nlate\r\n")
    assert app.subjects() == []


def test_failing_commit_is_rendered_by_the_exception_view_and_queues_nothing(make_app):
    class FailingVote:
        def __init__(self, manager):
            self.transaction_manager = manager

        def abort(self, txn):
            pass

        tpc_begin = commit = tpc_abort = tpc_finish = abort

        def tpc_vote(self, txn):
            raise ValueError("the database refused")

        def sortKey(self):  # noqa: N802
            return "~zzz"

    def view(request):
        request.mailer.send(mail(request))
        manager = request.mailer.transaction_manager
        manager.get().join(FailingVote(manager))
        return Response("ok")

    def extra(config):
        config.add_route("vote", "/vote")
        config.add_view(view, route_name="vote")

    app = make_app("own", extra=extra)
    response = app.http.get("/vote", status=200)
    assert "sorry" in response.text  # the app's ValueError exception view rendered it
    assert app.subjects() == []
    assert app.uncommitted() == []


def test_request_mailer_is_reified_per_request(make_app):
    seen = []

    def view(request):
        seen.append((request.mailer is request.mailer, request.mailer))
        return Response("ok")

    def extra(config):
        config.add_route("same", "/same")
        config.add_view(view, route_name="same")

    app = make_app("own", extra=extra)
    app.http.get("/same")
    app.http.get("/same")
    assert seen[0][0] and seen[1][0]
    assert seen[0][1] is not seen[1][1]
    assert seen[0][1].queue is seen[1][1].queue  # one MessageQueue for the app


def test_queue_is_opened_once_not_per_request(make_app, monkeypatch):
    app = make_app("own")
    created = []
    monkeypatch.setattr(MessageQueue, "__init__", lambda self, *a, **k: created.append(a))
    app.http.get("/ok")
    app.http.get("/ok")
    assert created == []


@pytest.mark.parametrize("setup", ["own", "tm-explicit"])
def test_in_a_script_request_mailer_joins_request_tm_or_the_thread_local_manager(make_app, setup):
    from pyramid.scripting import prepare

    app = make_app(setup)
    env = prepare(registry=app.registry)
    try:
        request = env["request"]
        manager = request.mailer.transaction_manager
        if setup == "own":
            assert manager is transaction.manager
        else:
            assert manager is request.tm and manager is not transaction.manager
        with manager:
            request.mailer.send(b"From: a@example.com\r\nTo: b@example.com\r\nSubject: from a script\r\n\r\nx\r\n")
    finally:
        env["closer"]()
    assert app.subjects() == ["from a script"]


def test_view_that_ends_the_transaction_itself_keeps_its_outcome_and_its_error(make_app):
    def commit_then(request):
        request.mailer.send(mail(request))
        request.mailer.transaction_manager.commit()  # explicit manager: no new transaction begins
        if request.params.get("fail"):
            raise RuntimeError("failed after committing")
        return Response("committed by the view", status=500)

    def extra(config):
        config.add_route("commit", "/commit")
        config.add_view(commit_then, route_name="commit")

    app = make_app("own", extra=extra)
    app.http.get("/commit", status=500)
    with pytest.raises(RuntimeError, match="failed after committing"):  # not NoTransaction
        app.http.get("/commit", params={"fail": "1"})
    assert app.subjects() == ["/commit", "/commit"]
