"""An in-memory mailer for tests: ``config.include('mq_pyramid.testing')`` and ``get_outbox()``.

Unlike pyramid_mailer's test mailer it honours the transaction: the outbox holds only
the messages of committed transactions, so a test of a failing request can assert that
no mail would have left. It validates with the very code ``QueuedMailer`` uses, so a
message that fails here fails in production too, and it needs no ``mq.queue_dir``.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import time
from dataclasses import dataclass
from typing import Any

import transaction
from zope.interface import implementer

from mq_transaction.interfaces import IMailer
from mq_transaction.mailer import join_transaction
from mq_transaction.prepare import PreparedMessage, Recipients, prepare_message
from mq_transaction.queue import new_queue_id

from . import install
from .settings import read_settings

__all__ = ["MemoryMailer", "OutboxMessage", "get_outbox", "get_uncommitted_mail", "includeme", "testing_mailer"]


@dataclass(frozen=True)
class OutboxMessage:
    """A message the queue would have stored: its envelope and its exact bytes."""

    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    message: bytes
    message_id: str

    @property
    def email(self) -> email.message.EmailMessage:
        """The message parsed, for assertions such as ``outbox[0].email["Subject"]``."""
        return email.message_from_bytes(self.message, policy=email.policy.default)


@implementer(IMailer)
class MemoryMailer:
    """An ``IMailer`` whose queue is the list ``outbox``, filled when transactions commit."""

    def __init__(self, transaction_manager: Any = None, default_sender: str | None = None) -> None:
        self.transaction_manager = transaction_manager or transaction.manager
        self.default_sender = default_sender
        self.outbox: list[OutboxMessage] = []
        #: Messages sent in transactions still open, oldest first (see get_uncommitted_mail).
        self.uncommitted: list[OutboxMessage] = []

    def prepare(self, message: object, sender: str | None = None, recipients: Recipients = None) -> PreparedMessage:
        """Validate and return what would be queued, exactly as ``QueuedMailer.prepare``."""
        return prepare_message(message, sender, recipients, self.default_sender)

    def send(self, message: object, sender: str | None = None, recipients: Recipients = None) -> str:
        """Add ``message`` to the outbox when the current transaction commits; return its id."""
        record = self._record(self.prepare(message, sender, recipients))
        self._join().pending.append(record)
        self.uncommitted.append(record)
        return record.queue_id

    def enqueue(self, message: object, sender: str | None = None, recipients: Recipients = None) -> str:
        """Add ``message`` to the outbox at once, whatever the transaction does."""
        record = self._record(self.prepare(message, sender, recipients))
        self.outbox.append(record)
        return record.queue_id

    def _record(self, prepared: PreparedMessage) -> OutboxMessage:
        return OutboxMessage(
            new_queue_id(time.time()),
            prepared.sender,
            prepared.recipients,
            prepared.message,
            prepared.message_id,
        )

    def _join(self) -> _OutboxDataManager:
        # The same rules as QueuedMailer, by the same code.
        return join_transaction(
            self, self.transaction_manager, lambda: _OutboxDataManager(self.outbox, self.uncommitted)
        )


class _OutboxDataManager:
    """Moves a transaction's messages into the outbox in ``tpc_finish``, as the queue publishes."""

    def __init__(self, outbox: list[OutboxMessage], uncommitted: list[OutboxMessage]) -> None:
        self.outbox = outbox
        self.uncommitted = uncommitted
        self.pending: list[OutboxMessage] = []
        self.joined = True  # see join_transaction()

    def forget(self, records: list[OutboxMessage]) -> None:
        """Take ``records`` out of the mailer's uncommitted list (their transaction ended)."""
        ended = {record.queue_id for record in records}
        self.uncommitted[:] = [record for record in self.uncommitted if record.queue_id not in ended]

    def abort(self, txn: Any) -> None:
        self.forget(self.pending)
        self.pending = []
        self.joined = False

    def tpc_begin(self, txn: Any) -> None:
        pass

    def commit(self, txn: Any) -> None:
        pass

    def tpc_vote(self, txn: Any) -> None:
        pass

    def tpc_finish(self, txn: Any) -> None:
        self.outbox.extend(self.pending)
        self.forget(self.pending)
        self.pending = []

    def tpc_abort(self, txn: Any) -> None:
        self.abort(txn)

    def sortKey(self) -> str:  # noqa: N802 - the transaction API's name
        return f"mq_transaction:memory:{id(self)}"

    def savepoint(self) -> _Savepoint:
        return _Savepoint(self, len(self.pending))


class _Savepoint:
    def __init__(self, manager: _OutboxDataManager, count: int) -> None:
        self.manager = manager
        self.count = count

    def rollback(self) -> None:
        self.manager.forget(self.manager.pending[self.count :])
        del self.manager.pending[self.count :]


def get_outbox(request_or_registry: Any) -> list[OutboxMessage]:
    """The committed messages, oldest first, of the app that included ``mq_pyramid.testing``.

    Takes a request, a registry, a Configurator or a router (``TestApp(app).app``): any
    object with a ``registry``, or the registry itself. The list is live: tests may
    ``clear()`` it.
    """
    return testing_mailer(request_or_registry).outbox


def get_uncommitted_mail(request_or_registry: Any) -> list[OutboxMessage]:
    """The messages sent in transactions still open (neither committed nor aborted), oldest first.

    For tests whose requests run inside a transaction the test never commits, as the
    Pyramid starter's fixtures do (begun, doomed, aborted at the end): their mail never
    reaches :func:`get_outbox`, and waits here until the transaction ends. Takes what
    :func:`get_outbox` takes; returns a new list.
    """
    return list(testing_mailer(request_or_registry).uncommitted)


def testing_mailer(request_or_registry: Any) -> MemoryMailer:
    """The testing mailer registered for an app; ``LookupError`` when there is none."""
    registry = getattr(request_or_registry, "registry", request_or_registry)
    mailer = registry.queryUtility(IMailer)
    if not isinstance(mailer, MemoryMailer):
        raise LookupError("no testing mailer in this registry: call config.include('mq_pyramid.testing')")
    return mailer


def includeme(config: Any) -> None:
    """Install :class:`MemoryMailer` as the ``IMailer`` (replacing a real one) and wire it up."""
    settings = read_settings(config.registry.settings, require_queue_dir=False)
    install(config, MemoryMailer(default_sender=settings.default_sender), settings)
