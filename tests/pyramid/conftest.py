"""Real Pyramid apps, served through WebTest, queueing into real queues.

``make_app`` queues into ``queue_backend``'s queue, so every test that makes an app runs
on the directory queue (a fresh directory under ``tmp_path`` for each app made) and on the
database queue (the test's database, emptied before it; own-connection mode, the
same-transaction mode being tested in test_pyramid_database_queue.py). A module that
overrides ``queue_backend`` with ``directory_backend`` runs on the directory queue only and
says why.

``make_app(setup)`` builds one app; ``setup`` picks who owns the request's transaction:

- ``own``: no pyramid_tm, mq_pyramid's tween;
- ``tm``: pyramid_tm with the thread-local manager and ``tm.commit_veto`` set to
  ``pyramid_tm.default_commit_veto`` (what docs/pyramid.md recommends);
- ``tm-explicit``: the same with ``tm.manager_hook = pyramid_tm.explicit_manager``;
- ``tm-no-veto``: pyramid_tm as it comes, without a commit veto.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import transaction
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound, HTTPNotFound
from pyramid.response import Response
from queue_backends import QueueBackend, staged
from webtest import TestApp

from mq_transaction import MessageQueue

SETUPS = ("own", "tm", "tm-explicit")
TM_SETTINGS = {
    "own": {},
    "tm": {"tm.commit_veto": "pyramid_tm.default_commit_veto"},
    "tm-explicit": {
        "tm.commit_veto": "pyramid_tm.default_commit_veto",
        "tm.manager_hook": "pyramid_tm.explicit_manager",
    },
    "tm-no-veto": {},
}


def mail(request: Any, tag: str = "") -> bytes:
    """A message whose subject names the path (and ``tag``), so tests can tell mails apart."""
    subject = f"{request.path}{tag}"
    return f"From: app@example.com\r\nTo: ann@example.org\r\nSubject: {subject}\r\n\r\nHello\r\n".encode()


# -- views: each sends mail, then ends the request in its own way ---------------------


def ok_view(request):
    request.mailer.send(mail(request))
    return Response("ok")


def several_view(request):
    for number in range(int(request.params.get("n", "3"))):
        request.mailer.send(mail(request, f" #{number}"))
    if request.params.get("fail"):
        raise RuntimeError("failed after sending several")
    return Response("sent several")


def raise_view(request):
    request.mailer.send(mail(request))
    raise RuntimeError("the view failed after sending")


def status_view(request):
    request.mailer.send(mail(request))
    return Response("status", status=int(request.matchdict["code"]))


def raise_not_found_view(request):
    request.mailer.send(mail(request))
    raise HTTPNotFound()


def redirect_raised_view(request):
    request.mailer.send(mail(request))
    raise HTTPFound(location="/done")


def redirect_returned_view(request):
    request.mailer.send(mail(request))
    return HTTPFound(location="/done")


def xtm_view(request):
    request.mailer.send(mail(request))
    response = Response("x-tm", status=int(request.params.get("status", "200")))
    response.headers["X-Tm"] = request.matchdict["value"]
    return response


def doom_view(request):
    request.mailer.send(mail(request))
    request.mailer.transaction_manager.doom()
    return Response("doomed")


def enqueue_then_raise_view(request):
    request.mailer.enqueue(mail(request, " enqueued"))
    request.mailer.send(mail(request, " sent"))
    raise RuntimeError("failed after enqueue and send")


def handled_error_view(request):
    request.mailer.send(mail(request))
    raise ValueError("rendered by an exception view")


def friendly_error_page(exc, request):
    return Response("sorry, something went wrong", status=200)


def manager_view(request):
    """Report which transaction manager the request's mailer joins."""
    manager = request.mailer.transaction_manager
    tm = getattr(request, "tm", None)
    return Response(
        json_body={
            "explicit": bool(getattr(manager, "explicit", False)),
            "is_request_tm": manager is tm,
            "is_threadlocal": manager is transaction.manager,
            "active": manager.get() is not None,
        }
    )


VIEWS = {
    "ok": ("/ok", ok_view),
    "several": ("/several", several_view),
    "raise": ("/raise", raise_view),
    "status": ("/status/{code}", status_view),
    "raise-not-found": ("/raise-not-found", raise_not_found_view),
    "redirect-raised": ("/redirect-raised", redirect_raised_view),
    "redirect-returned": ("/redirect-returned", redirect_returned_view),
    "xtm": ("/xtm/{value}", xtm_view),
    "doom": ("/doom", doom_view),
    "enqueue-then-raise": ("/enqueue-then-raise", enqueue_then_raise_view),
    "handled-error": ("/handled-error", handled_error_view),
    "manager": ("/manager", manager_view),
}


@dataclass
class MailApp:
    """A WebTest app and the queue its mailer writes to."""

    http: TestApp
    queue: Any  # a MessageQueue, a DatabaseQueue, or None (the testing mailer alone)
    registry: Any

    def subjects(self) -> list[str]:
        """Subjects of the committed (queued, in ``new/``) messages, oldest first."""
        subjects = []
        for entry in self.queue.entries("queued"):
            _envelope, message = self.queue.read(entry)
            for line in message.split(b"\r\n"):
                if line.startswith(b"Subject: "):
                    subjects.append(line[len(b"Subject: ") :].decode())
        return subjects

    def uncommitted(self) -> list[str]:
        """Messages staged and neither published nor discarded (files left in ``tmp/``, rows
        left ``staged``): an aborted or finished transaction leaves none."""
        return staged(self.queue)


def build_app(
    setup: str = "own",
    settings: dict | None = None,
    includes: tuple[str, ...] = ("mq_pyramid",),
    extra: Any = None,
) -> tuple[Any, Configurator]:
    """A Pyramid app with every view above; ``extra(config)`` may add more."""
    all_settings = dict(TM_SETTINGS[setup])
    all_settings.update(settings or {})
    with Configurator(settings=all_settings) as config:
        if setup != "own":
            config.include("pyramid_tm")
        for include in includes:
            config.include(include)
        for name, (pattern, view) in VIEWS.items():
            config.add_route(name, pattern)
            config.add_view(view, route_name=name)
        config.add_view(friendly_error_page, context=ValueError)
        if extra is not None:
            extra(config)
    return config.make_wsgi_app(), config


@pytest.fixture(params=SETUPS)
def setup(request) -> str:
    """Each of ``SETUPS`` in turn."""
    return request.param


@pytest.fixture
def directory_backend(tmp_path) -> QueueBackend:
    """A directory queue alone, for a module that overrides ``queue_backend`` with it."""
    return QueueBackend("directory", str(tmp_path / "queue"))


@pytest.fixture
def make_app(tmp_path, queue_backend):
    """``make_app(setup, settings=..., includes=..., extra=...)``: a :class:`MailApp`.

    The queue defaults to ``queue_backend``'s: ``mq.queue_dir`` a fresh directory under
    ``tmp_path`` for each app, or ``mq.queue_url`` the test's database.
    ``settings={"mq.queue_dir": None}`` means no queue at all (the testing mailer).
    """
    counter = iter(range(1000))

    def make(setup: str = "own", settings: dict | None = None, **kwargs: Any) -> MailApp:
        if queue_backend.is_database:
            all_settings = dict(queue_backend.settings)
        else:
            all_settings = {"mq.queue_dir": str(tmp_path / f"queue{next(counter)}")}
        if settings and "mq.queue_dir" in settings:
            all_settings.pop("mq.queue_url", None)  # the test names its own queue, or none
        all_settings.update(settings or {})
        app, config = build_app(setup, all_settings, **kwargs)
        queue = None
        if all_settings.get("mq.queue_url"):
            queue = queue_backend.open()
        elif all_settings.get("mq.queue_dir"):
            queue = MessageQueue(all_settings["mq.queue_dir"])
        return MailApp(TestApp(app), queue, config.registry)

    transaction.abort()  # no test inherits a thread-local transaction, none leaves one
    yield make
    transaction.abort()
