"""The ``transaction`` data manager that publishes a transaction's mail when it commits."""

from __future__ import annotations

import logging

from transaction.interfaces import IDataManagerSavepoint, ISavepointDataManager
from zope.interface import implementer

from .errors import QueueWriteError
from .interfaces import IMailQueue

log = logging.getLogger("mq_transaction")

#: Sorts before zope.sqlalchemy ("~sqlalchemy:..."), whose one-phase manager commits the
#: database inside its tpc_vote: our vote (nothing left to fail: the files are already
#: durable in tmp/) runs first, and the mail is published in tpc_finish, after every
#: vote, hence only once the database has committed.
SORT_KEY_PREFIX = "mq_transaction"


@implementer(ISavepointDataManager)
class MailDataManager:
    """Holds the messages one transaction queued; publishes them on commit.

    Each message is already written and fsynced in ``tmp/`` when ``send()`` returns, so
    a full disk fails the request before the commit. ``tpc_finish`` only renames into
    ``new/`` and fsyncs the directory; it never raises. ``abort``/``tpc_abort`` remove
    the transaction's files from ``tmp/``, are idempotent and are silent after
    ``tpc_finish``.
    """

    def __init__(self, queue: IMailQueue, transaction_manager: object) -> None:
        self.queue = queue
        self.transaction_manager = transaction_manager
        self.queue_ids: list[str] = []
        self._finished = False
        #: A write that failed in this transaction: the vote refuses, so a caller that
        #: caught the error cannot commit the rest of the request without that message.
        self.write_error: Exception | None = None
        # False once aborted: a rollback to a savepoint taken before this manager joined
        # aborts and unjoins it while the transaction goes on, so the mailer joins again.
        self.joined = True

    def add(self, queue_id: str) -> None:
        """Record a message written to ``tmp/`` in this transaction."""
        self.queue_ids.append(queue_id)

    def _discard(self, queue_ids: list[str]) -> None:
        self.queue.discard(queue_ids)

    def abort(self, transaction: object) -> None:
        """Remove this transaction's messages from ``tmp/`` (any phase, any number of times)."""
        if not self._finished:
            self._discard(self.queue_ids)
            self.queue_ids = []
            self.joined = False
            self.write_error = None

    def tpc_begin(self, transaction: object) -> None:
        """Nothing to do: the messages are already durable in ``tmp/``."""

    def commit(self, transaction: object) -> None:
        """Nothing to do: the messages are already durable in ``tmp/``."""

    def tpc_vote(self, transaction: object) -> None:
        """Vote yes (every message is already durable), unless a write failed in this transaction."""
        if self.write_error is not None:
            raise QueueWriteError(
                f"a message of this transaction could not be queued ({self.write_error}); the transaction is vetoed"
            )

    def tpc_finish(self, transaction: object) -> None:
        """Publish: rename every message into ``new/`` and fsync it. Never raises."""
        self._finished = True
        try:
            problems = self.queue.publish(self.queue_ids)
        except Exception as exc:  # noqa: BLE001 - tpc_finish must not raise (publish promises not to)
            problems = [(queue_id, f"could not be published: {exc}") for queue_id in self.queue_ids]
        for queue_id, problem in problems:
            log.critical("transaction committed, but queue id %s %s", queue_id, problem)

    def tpc_abort(self, transaction: object) -> None:
        """Remove this transaction's messages from ``tmp/``; silent after ``tpc_finish``."""
        self.abort(transaction)

    def sortKey(self) -> str:  # noqa: N802 - the transaction API's name
        """Sort before zope.sqlalchemy (``~sqlalchemy``); see :data:`SORT_KEY_PREFIX`."""
        return f"{SORT_KEY_PREFIX}:{id(self)}"

    def savepoint(self) -> MailSavepoint:
        """Remember which messages exist now, so a rollback removes the later ones."""
        return MailSavepoint(self)


@implementer(IDataManagerSavepoint)
class MailSavepoint:
    """A point in a transaction's mail: rolling back removes the messages queued since,
    and forgets a write that failed since (the transaction may then commit)."""

    def __init__(self, manager: MailDataManager) -> None:
        self.manager = manager
        self.count = len(manager.queue_ids)
        self.write_error = manager.write_error

    def rollback(self) -> None:
        """Discard the messages queued after this savepoint; restore its write error."""
        later = self.manager.queue_ids[self.count :]
        del self.manager.queue_ids[self.count :]
        self.manager.write_error = self.write_error
        self.manager._discard(later)
