"""An in-memory mailer for tests: ``config.include('mq_pyramid.testing')`` and ``get_outbox()``.

Unlike pyramid_mailer's test mailer it honours the transaction: the outbox holds only
the messages of committed transactions, so a test of a failing request can assert that
no mail would have left. It is a ``QueuedMailer`` over an in-memory ``IMailQueue``
(:class:`~mq_transaction.memory_queue.MemoryQueue`): the same validation, the same data
manager, so it cannot drift from production; and it needs no ``mq.queue_dir``.
"""

from __future__ import annotations

import email
import email.message
import email.policy
from dataclasses import dataclass
from typing import Any

from mq_transaction.interfaces import IMailer
from mq_transaction.mailer import QueuedMailer
from mq_transaction.memory_queue import MemoryQueue
from mq_transaction.queuefile import Envelope

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


class MemoryMailer(QueuedMailer):
    """A :class:`QueuedMailer` over a :class:`MemoryQueue`: the real data manager, so the
    transaction rules are the production ones by construction.

    ``outbox`` lists the messages that became deliverable (their transaction committed,
    or ``enqueue()``), oldest first; ``uncommitted`` those staged by transactions still
    open.
    """

    def __init__(self, transaction_manager: Any = None, default_sender: str | None = None) -> None:
        #: Messages of committed transactions (and ``enqueue()``), oldest first; tests may clear it.
        self.outbox: list[OutboxMessage] = []
        super().__init__(
            MemoryQueue(on_publish=self._published),
            transaction_manager=transaction_manager,
            default_sender=default_sender,
        )

    @property
    def uncommitted(self) -> list[OutboxMessage]:
        """Messages sent in transactions still open, oldest first (see get_uncommitted_mail)."""
        memory: MemoryQueue = self.queue  # type: ignore[assignment] # always the MemoryQueue made above
        return [
            _outbox_message(queue_id, envelope, message) for queue_id, (_at, envelope, message) in memory.staged.items()
        ]

    def _published(self, queue_id: str, envelope: Envelope, message: bytes) -> None:
        self.outbox.append(_outbox_message(queue_id, envelope, message))


def _outbox_message(queue_id: str, envelope: Envelope, message: bytes) -> OutboxMessage:
    return OutboxMessage(
        queue_id,
        envelope.sender,
        tuple(r.address for r in envelope.recipients),
        message,
        envelope.message_id,
    )


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
