"""Read the ``mq.*`` settings of a Pyramid app, failing at configuration time with Pyramid's error."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyramid.exceptions

from mq_transaction import errors
from mq_transaction.database_opening import open_database_queue
from mq_transaction.errors import QueueWriteError
from mq_transaction.preflight import check_app_start
from mq_transaction.queue import MessageQueue
from mq_transaction.settings import Settings, key, parse_settings, resolve_callable


class ConfigurationError(pyramid.exceptions.ConfigurationError, errors.ConfigurationError):
    """A ``mq.*`` setting is missing or wrong; ``.key`` names it.

    It is both Pyramid's ``ConfigurationError`` (what ``config.include`` callers expect)
    and mq_transaction's (what ``mq-send`` raises for the same key), so either catches it.
    """

    def __init__(self, key: str, problem: str) -> None:
        errors.ConfigurationError.__init__(self, key, problem)


def read_settings(raw: Mapping[str, Any] | None, require_queue_dir: bool = True) -> Settings:
    """Parse the ``mq.*`` keys of ``raw`` (the registry settings) into :class:`Settings`."""
    try:
        return parse_settings(raw or {}, require_queue_dir=require_queue_dir)
    except errors.ConfigurationError as exc:
        raise ConfigurationError(exc.key, exc.problem) from None


def open_queue(settings: Settings) -> Any:
    """The database queue at ``mq.queue_url`` (its tables checked, writable), or the queue at
    ``mq.queue_dir`` (created when missing); check this process can write it."""
    if settings.queue_url:
        try:
            database_queue = open_database_queue(settings)
            database_queue.check_writable()
        except errors.ConfigurationError as exc:
            raise ConfigurationError(exc.key, exc.problem) from None
        except errors.MailQueueError as exc:
            raise ConfigurationError(key("queue_url"), str(exc)) from None
        return database_queue
    if not settings.queue_dir:
        raise ConfigurationError(key("queue_dir"), "missing: set it to the queue directory")
    try:
        check_app_start(settings)
        queue = MessageQueue(settings.queue_dir, create=True, group_access=settings.group_access, fsync=settings.fsync)
        queue.check_writable()
    except QueueWriteError as exc:
        raise ConfigurationError(key("queue_dir"), str(exc)) from None
    except errors.ConfigurationError as exc:
        raise ConfigurationError(exc.key, exc.problem) from None
    return queue


def resolve_commit_veto(settings: Settings) -> Callable[[Any, Any], bool] | None:
    """The callable named by ``mq.commit_veto``, or None when it is not set."""
    if not settings.commit_veto:
        return None
    try:
        return resolve_callable(key("commit_veto"), settings.commit_veto)
    except errors.ConfigurationError as exc:
        raise ConfigurationError(exc.key, exc.problem) from None
