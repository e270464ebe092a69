"""Two apps in one process, each with its own queue, never see each other's mail."""

from __future__ import annotations

import threading

import pytest
from webtest import TestApp

from mq_pyramid.testing import get_outbox


@pytest.fixture
def queue_backend(directory_backend):
    """Directory only: two apps, each on a queue of its own: two directories (the database
    variant would need a second database per test; two database queues are kept apart by
    their databases, nothing of ours)."""
    return directory_backend


def test_two_apps_with_two_queues_stay_apart(make_app, setup):
    shop = make_app(setup, settings={"mq.default_sender": "shop@example.com"})
    blog = make_app("own", settings={"mq.default_sender": "blog@example.com"})
    assert shop.queue.path != blog.queue.path

    shop.http.get("/ok")
    blog.http.get("/several", params={"n": "2"})
    with pytest.raises(RuntimeError):
        shop.http.get("/raise")
    blog.http.get("/redirect-raised", status=302)
    shop.http.get("/xtm/abort")

    assert shop.subjects() == ["/ok"]
    assert blog.subjects() == ["/several #0", "/several #1", "/redirect-raised"]
    senders = {shop.queue.read(entry)[0].sender for entry in shop.queue.entries("queued")}
    assert senders == {"shop@example.com"}


def test_a_testing_app_and_a_real_app_stay_apart(make_app):
    real = make_app("tm")
    fake = make_app("own", settings={"mq.queue_dir": None}, includes=("mq_pyramid.testing",))
    real.http.get("/ok")
    fake.http.get("/redirect-returned", status=302)
    assert real.subjects() == ["/ok"]
    assert [m.email["Subject"] for m in get_outbox(fake.registry)] == ["/redirect-returned"]


def test_concurrent_requests_to_two_apps_each_commit_their_own(make_app):
    apps = [make_app("own"), make_app("tm-explicit")]
    errors = []

    def hammer(app: TestApp, path: str) -> None:
        try:
            for _ in range(20):
                if path == "/raise":
                    with pytest.raises(RuntimeError):
                        app.get(path)
                else:
                    app.get(path)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(app.http, path)) for app in apps for path in ("/ok", "/raise")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for app in apps:
        assert app.subjects() == ["/ok"] * 20
        assert app.uncommitted() == []
