"""The tween that gives each request its own transaction when pyramid_tm does not.

Order, from the request's ingress down to the view::

    pyramid_tm.tm_tween_factory      (when included)
    mq_pyramid.tween.mail_tween_factory
    pyramid.tweens.excview_tween_factory (EXCVIEW)

Below pyramid_tm, so it can see that pyramid_tm already opened the request's
transaction and step aside (one transaction per request, never two). Above EXCVIEW, so
it judges the response an exception view rendered: a raised ``HTTPFound`` arrives as a
302 and commits.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import transaction
from pyramid.httpexceptions import HTTPException, HTTPNotFound
from pyramid.interfaces import ITweens
from pyramid.tweens import EXCVIEW
from transaction.interfaces import NoTransaction
from zope.interface import Interface, alsoProvides

from .settings import ConfigurationError

try:
    from pyramid_retry import IRetryableError
except ImportError:  # pragma: no cover - pyramid_retry is optional
    IRetryableError = None

try:
    from pyramid_tm import is_tm_active
except ImportError:  # pragma: no cover - pyramid_tm is optional

    def is_tm_active(request: Any) -> bool:
        return False


NAME = "mq_pyramid.tween.mail_tween_factory"
PYRAMID_TM = "pyramid_tm.tm_tween_factory"

#: The attribute of the request that holds the tween's transaction manager. An
#: attribute of the request object, not of its WSGI environ: pyramid_retry reuses the
#: environ for the next attempt, and each attempt must start a transaction of its own.
MANAGER_ATTRIBUTE = "_mq_transaction_manager"


class ICommitVeto(Interface):
    """The ``mq.commit_veto`` callable ``veto(request, response) -> bool`` (True aborts)."""


def default_commit_veto(request: Any, response: Any) -> bool:
    """Abort on a 4xx or 5xx status, or on an ``X-Tm`` header other than ``commit``.

    The same rule as ``pyramid_tm.default_commit_veto``: an ``X-Tm`` header decides
    when present, else the status does.
    """
    xtm = response.headers.get("x-tm")
    if xtm is not None:
        return xtm != "commit"
    return response.status.startswith(("4", "5"))


def request_transaction_manager(request: Any) -> transaction.TransactionManager | None:
    """The manager this tween opened for ``request``, or None when it stepped aside."""
    return request.__dict__.get(MANAGER_ATTRIBUTE)


def mail_tween_factory(handler: Callable[[Any], Any], registry: Any) -> Callable[[Any], Any]:
    """Build the tween; the veto is looked up once, here, not on every request."""
    _check_position(registry)
    commit_veto = registry.queryUtility(ICommitVeto) or default_commit_veto

    def mail_tween(request: Any) -> Any:
        if is_tm_active(request):
            return handler(request)  # pyramid_tm owns this request's transaction

        # An explicit manager per request: nothing else in the process can join or end
        # this transaction by accident, and mail sent outside it fails loudly.
        manager = transaction.TransactionManager(explicit=True)
        setattr(request, MANAGER_ATTRIBUTE, manager)
        manager.begin()
        try:
            response = handler(request)
        except Exception as exc:
            if _in_transaction(manager):
                _mark_retryable(manager, exc)
                manager.abort()
            raise
        if not _in_transaction(manager):
            return response  # the view ended the transaction itself: nothing left to decide
        if _must_abort(request, response, manager, commit_veto):
            manager.abort()
            return response
        return _commit(request, manager, response)

    return mail_tween


def _must_abort(request: Any, response: Any, manager: transaction.TransactionManager, veto: Callable) -> bool:
    if manager.isDoomed():
        return True
    # An exception view rendered this response. A raised HTTPFound is a response the view
    # chose, so the veto judges it; any other exception is a failure, even when an
    # exception view turned it into a friendly 200 page (and pyramid_retry will retry it
    # if it is retryable: committing this attempt's mail would send it twice).
    exception = getattr(request, "exception", None)
    if exception is not None and not isinstance(exception, HTTPException):
        return True
    return bool(veto(request, response))


def _commit(request: Any, manager: transaction.TransactionManager, response: Any) -> Any:
    try:
        manager.commit()
    except Exception as commit_error:
        # The commit failed (another resource's vote, a database error): the transaction
        # is aborted already. This tween sits above EXCVIEW, so render the error with the
        # app's exception views ourselves, as pyramid_tm does.
        exc_info = sys.exc_info()
        try:
            return request.invoke_exception_view(exc_info)
        except HTTPNotFound:
            raise commit_error from None
        finally:
            del exc_info
    return response


def _in_transaction(manager: transaction.TransactionManager) -> bool:
    try:
        manager.get()
    except NoTransaction:
        return False
    return True


def _mark_retryable(manager: transaction.TransactionManager, exc: Exception) -> None:
    # Ask the transaction before aborting it, while its data managers (zope.sqlalchemy's
    # can recognise a serialization failure) are still joined.
    if IRetryableError is not None and manager.get().isRetryableError(exc):
        alsoProvides(exc, IRetryableError)


def _check_position(registry: Any) -> None:
    """Refuse an explicit ``pyramid.tweens`` list that puts this tween in the wrong place."""
    tweens = registry.queryUtility(ITweens)
    if tweens is None or not tweens.explicit:
        return  # implicit order: the over/under hints given in includeme hold
    names = [name for name, _factory in tweens.explicit]
    if NAME not in names:
        return
    position = names.index(NAME)
    if PYRAMID_TM in names and names.index(PYRAMID_TM) > position:
        raise ConfigurationError(
            "pyramid.tweens", f"list {PYRAMID_TM} before {NAME}, or each request gets two transactions"
        )
    if EXCVIEW in names and names.index(EXCVIEW) < position:
        raise ConfigurationError(
            "pyramid.tweens", f"list {NAME} before {EXCVIEW}, or a raised HTTPFound aborts the mail"
        )
