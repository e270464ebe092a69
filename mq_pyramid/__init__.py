"""Pyramid integration: ``config.include('mq_pyramid')`` gives views ``request.mailer``.

``request.mailer.send(message)`` queues mail in the request's transaction: pyramid_tm's
when it is included, else one that mq_pyramid's tween opens for each request (see
:mod:`mq_pyramid.tween` for the rules and the tween order). ``config.include
('mq_pyramid.testing')`` swaps in an in-memory mailer for tests.
"""

from __future__ import annotations

from typing import Any

from pyramid.tweens import EXCVIEW, INGRESS

from mq_transaction import QueuedMailer
from mq_transaction.interfaces import IMailer, ISessionMailQueue
from mq_transaction.settings import Settings

from .request import request_mailer
from .settings import ConfigurationError, open_queue, read_settings, resolve_commit_veto
from .tween import NAME as TWEEN_NAME
from .tween import PYRAMID_TM, ICommitVeto, default_commit_veto

__all__ = ["ConfigurationError", "default_commit_veto", "includeme", "install", "request_mailer"]


def includeme(config: Any) -> None:
    """Read and check the ``mq.*`` settings, open the queue, register the mailer, add the tween.

    When ``mq_pyramid.testing`` was included first, its testing mailer stays and no queue is
    opened. Raises ``pyramid.exceptions.ConfigurationError`` (an :class:`ConfigurationError`
    naming the key) for a missing ``mq.queue_dir``, a queue directory that cannot be
    created or written, an unknown ``mq.`` key or a bad value.
    """
    from .testing import testing_mailer  # here, not at the top: mq_pyramid.testing imports this module

    mailer: Any  # an IMailer provider (zope.interface declares, mypy cannot check)
    try:
        mailer = testing_mailer(config.registry)
    except LookupError:
        settings = read_settings(config.registry.settings)
        queue = open_queue(settings)  # once per app: creating a MessageQueue makes directories
        mailer = QueuedMailer(queue, default_sender=settings.default_sender)
    else:
        # mq_pyramid.testing came first (``pyramid.includes`` in testing.ini runs before the
        # app's main() includes mq_pyramid): the testing mailer stays, no mq.queue_dir needed.
        settings = read_settings(config.registry.settings, require_queue_dir=False)
    install(config, mailer, settings)


def install(config: Any, mailer: Any, settings: Settings) -> None:
    """Register ``mailer`` as the app's ``IMailer`` and wire up ``request.mailer`` and the tween.

    Called by both includes; the second call replaces the mailer (so
    ``mq_pyramid.testing`` after ``mq_pyramid`` wins) and wires nothing twice.
    """
    veto = resolve_commit_veto(settings)
    # Registered at once, not as deferred actions: a later include replaces them
    # instead of conflicting with them.
    config.registry.registerUtility(mailer, IMailer)
    # mq.queue_session, read once: the request attribute holding the app's session, through
    # which request.mailer writes (a database queue only; the testing mailer has none).
    database = ISessionMailQueue.providedBy(getattr(mailer, "queue", None))
    config.registry.mq_queue_session = settings.queue_session if database else None
    if veto is not None:
        config.registry.registerUtility(veto, ICommitVeto)
    config.include(_wire)  # Pyramid includes a callable once per app, however often asked


def _wire(config: Any) -> None:
    config.add_request_method(request_mailer, "mailer", reify=True)
    # Fallbacks (INGRESS) keep the hint valid when pyramid_tm is not included; with it,
    # whichever of the two is included first, this tween ends up below pyramid_tm.
    config.add_tween(TWEEN_NAME, over=EXCVIEW, under=(PYRAMID_TM, INGRESS))
