"""``QueuedMailer``: the object applications call to queue mail."""

from __future__ import annotations

import os
import time
from typing import Any

import transaction
from transaction.interfaces import NoTransaction
from zope.interface import implementer

from .datamanager import MailDataManager
from .errors import NoTransactionError, QueueWriteError
from .interfaces import IMailer, IMailQueue, ISessionMailQueue
from .prepare import PreparedMessage, Recipients, prepare_message
from .queue import MessageQueue
from .queuefile import Envelope


@implementer(IMailer)
class QueuedMailer:
    """Queue messages in an ``IMailQueue``, inside a transaction or at once.

    ``queue`` is any ``IMailQueue`` (a :class:`MessageQueue`, a ``DatabaseQueue``, a
    ``MemoryQueue``) or a directory path (then ``MessageQueue(path)``). ``transaction_manager``
    is the manager whose transactions ``send()`` joins (default: ``transaction.manager``,
    the thread-local one). ``default_sender`` is the envelope sender when ``send()`` is
    given none.

    ``session`` (with a :class:`~mq_transaction.DatabaseQueue` in the same database) is
    the app's SQLAlchemy session joined to the transaction by zope.sqlalchemy: ``send()``
    then inserts the message through it, so it commits or rolls back with the app's rows
    in one database commit, and no data manager of ours joins.
    """

    def __init__(
        self,
        queue: IMailQueue | str | os.PathLike,
        transaction_manager: transaction.interfaces.ITransactionManager | None = None,
        default_sender: str | None = None,
        session: Any = None,
    ) -> None:
        self.queue: IMailQueue = MessageQueue(queue) if isinstance(queue, (str, os.PathLike)) else queue
        self.transaction_manager = transaction_manager or transaction.manager
        self.default_sender = default_sender
        #: The app's SQLAlchemy session (zope.sqlalchemy-joined), for a database queue: send()
        #: then inserts through it, so the mail commits in the app's own database commit.
        self.session = session
        if session is not None and not ISessionMailQueue.providedBy(self.queue):
            raise TypeError(f"session= needs a DatabaseQueue, not {self.queue!r}")

    def prepare(self, message: object, sender: str | None = None, recipients: Recipients = None) -> PreparedMessage:
        """Validate and return what would be queued, without queueing it."""
        return prepare_message(message, sender, recipients, self.default_sender)

    def send(self, message: object, sender: str | None = None, recipients: Recipients = None) -> str:
        """Queue ``message`` in the current transaction; return its queue id.

        The message is written durably to ``tmp/`` now (a full disk raises here) and
        becomes deliverable only when the transaction commits; an abort removes it.
        """
        prepared = self.prepare(message, sender, recipients)
        if self.session is not None:
            _active_transaction(self.transaction_manager)
            database_queue: ISessionMailQueue = self.queue  # type: ignore[assignment] # checked in __init__
            return database_queue.insert_in_session(
                self.session, _envelope(prepared), prepared.message, self.transaction_manager
            )
        manager = self._join()
        try:
            queue_id = self.queue.stage(_envelope(prepared), prepared.message)
        except QueueWriteError as exc:
            manager.write_error = exc
            raise
        manager.add(queue_id)
        return queue_id

    def enqueue(self, message: object, sender: str | None = None, recipients: Recipients = None) -> str:
        """Queue ``message`` durably at once, whatever the transaction does; return its id."""
        prepared = self.prepare(message, sender, recipients)
        return self.queue.enqueue(_envelope(prepared), prepared.message)

    def _join(self) -> MailDataManager:
        """This mailer's data manager in the current transaction, joining one if needed.

        One data manager per transaction, joined once. An explicit manager with no
        transaction, or a transaction that is committing or over, raises
        :class:`NoTransactionError` rather than losing the mail. A data manager unjoined by
        a rollback to a savepoint older than it (its ``joined`` turned False) joins again.
        """
        txn = _active_transaction(self.transaction_manager)
        try:
            manager: MailDataManager = txn.data(self)
        except KeyError:
            manager = MailDataManager(self.queue, self.transaction_manager)
            txn.set_data(self, manager)
        else:
            if manager.joined:
                return manager
            manager.joined = True
        txn.join(manager)
        return manager


def _active_transaction(transaction_manager: Any) -> Any:
    """The manager's current transaction; :class:`NoTransactionError` when there is none to join."""
    try:
        txn = transaction_manager.get()
    except NoTransaction:
        raise NoTransactionError(
            "send() needs an active transaction: call transaction_manager.begin() first, "
            "or use enqueue() to queue without one"
        ) from None
    status = str(getattr(txn, "status", "Active"))
    if status not in ("Active", "Doomed"):
        raise NoTransactionError(f"send() cannot join a transaction that is {status.lower()}")
    return txn


def _envelope(prepared: PreparedMessage) -> Envelope:
    return Envelope.new(prepared.sender, prepared.recipients, time.time(), prepared.message_id)
