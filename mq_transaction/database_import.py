"""Move the mail of a queue directory into a database queue (when an app moves to several hosts)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .database_queue import DatabaseQueue
from .interfaces import IMailQueue
from .states import MessageState

log = logging.getLogger("mq_transaction.database_import")

#: The states whose messages move, in this order (``sending`` is left to its sender,
#: ``corrupt`` files stay on disk for a person to look at).
MOVED_STATES = (MessageState.QUEUED, MessageState.DEFERRED, MessageState.HELD, MessageState.FAILED)


@dataclass
class MoveReport:
    """What :func:`move_queue` did: queue ids moved, and those left where they were, with why."""

    moved: list[str] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)


def move_queue(source: IMailQueue, target: DatabaseQueue) -> MoveReport:
    """Move every queued, deferred, held and failed message of ``source`` into ``target``.

    Each message keeps its queue id, its state, its envelope (recipients' statuses and
    replies, attempts, next attempt time) and its exact bytes. It is inserted and committed
    first, then removed from ``source``: a crash in between leaves it in both, and running
    this again completes the move without a second copy (the queue id is the row's key).
    Stop the senders of ``source`` first; a message a sender holds is left and reported.
    """
    report = MoveReport()
    for state in MOVED_STATES:
        for entry in list(source.entries(state)):
            claim = source.lock(entry)
            if claim is None:
                report.left.append((entry.queue_id, "a sender or another operator holds it"))
                continue
            if claim.envelope is None:
                claim.release()
                report.left.append((entry.queue_id, "it cannot be decoded"))
                continue
            try:
                target.insert_existing(entry.queue_id, state, claim.envelope, claim.message)
            except Exception:
                claim.release()
                raise
            source.remove(claim, state)
            report.moved.append(entry.queue_id)
            log.info("queue id %s (%s): moved from %s to %s", entry.queue_id, state, source.location, target.location)
    return report
