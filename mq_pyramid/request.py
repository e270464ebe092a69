"""``request.mailer``: the registered mailer, bound to the request's transaction manager."""

from __future__ import annotations

import copy
from typing import Any

import transaction
from pyramid.interfaces import IRequestExtensions

from mq_transaction.interfaces import IMailer

from .tween import is_tm_active, request_transaction_manager


def request_mailer(request: Any) -> Any:
    """Return a copy of the ``IMailer`` utility that joins this request's transaction.

    A shallow copy: it shares the utility's queue (or the testing outbox), and creating
    it costs no system call.
    """
    mailer = copy.copy(request.registry.getUtility(IMailer))
    mailer.transaction_manager = transaction_manager_for(request)
    session_attribute = getattr(request.registry, "mq_queue_session", None)
    if session_attribute:  # mq.queue_session: write through the app's session, in its commit
        mailer.session = getattr(request, session_attribute)
    return mailer


def transaction_manager_for(request: Any) -> Any:
    """The manager whose transaction is this request's.

    pyramid_tm's ``request.tm`` when pyramid_tm handles the request; else the manager
    mq_pyramid's tween opened; else (a script using ``pyramid.paster.bootstrap``, no
    tween ran) ``request.tm`` when pyramid_tm is included, or the thread-local
    ``transaction.manager``.
    """
    if is_tm_active(request):
        return request.tm
    manager = request_transaction_manager(request)
    if manager is not None:
        return manager
    if _has_request_method(request, "tm"):
        return request.tm
    return transaction.manager


def _has_request_method(request: Any, name: str) -> bool:
    extensions = request.registry.queryUtility(IRequestExtensions)
    return extensions is not None and (name in extensions.descriptors or name in extensions.methods)
