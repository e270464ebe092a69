"""Move the mail of a queue directory into a database queue (``mq-queue import-dir``).

For an app that moves to several hosts: every message keeps its queue id, its state, its
envelope (each recipient's status and last reply, the attempts, the next attempt time)
and its exact bytes.

Each message moves in three steps, so that a crash at any point loses nothing and a
second run makes no second copy:

1. it is stored in the database as a row no sender sees (``staged``, its
   ``lease_owner`` recording the state it will have: :meth:`DatabaseQueue.stage_import`);
2. its file is removed from the queue directory (unlink, then fsync of the directory);
3. the row gets its state (:meth:`DatabaseQueue.finish_import`): senders see it now.

A run first finishes what an interrupted one left between steps 1 and 3: a staged row
whose file is still there loses its file, then gets its state; one whose file is gone
gets its state. No message is ever both visible in the database and still on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .database_queue import DatabaseQueue
from .errors import DaemonAlreadyRunning, QueueInUseError, UnknownQueueIdError
from .queue import MessageQueue
from .states import MessageState

log = logging.getLogger("mq_transaction.database_import")

#: The states whose messages move, in this order. ``sending`` messages of dead senders go
#: back to ``queued`` first; ``corrupt`` files stay on disk for a person to look at.
MOVED_STATES = (MessageState.QUEUED, MessageState.DEFERRED, MessageState.HELD, MessageState.FAILED)


@dataclass(frozen=True)
class Moved:
    """One message moved: its queue id, its state, and whether an earlier run had begun it."""

    queue_id: str
    state: MessageState
    resumed: bool = False


@dataclass
class MoveReport:
    """What :func:`move_queue` did: the messages moved, and those left where they were, with why."""

    moved: list[Moved] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)

    @property
    def moved_ids(self) -> list[str]:
        """The queue ids moved, in the order they moved."""
        return [moved.queue_id for moved in self.moved]


def move_queue(
    source: MessageQueue, target: DatabaseQueue, on_moved: Callable[[Moved], None] | None = None
) -> MoveReport:
    """Move every message of the queue directory ``source`` into the database queue ``target``.

    Raises :class:`~mq_transaction.errors.QueueInUseError` (nothing moved) while an
    ``mq-send --daemon`` runs on ``source`` or an ``mq-send`` is delivering one of its
    messages; holds ``source``'s daemon lock from then on, so that no daemon starts
    meanwhile. Messages in ``sending`` whose sender died go back to ``queued`` and move.
    ``on_moved`` is called after each message moved (``mq-queue`` prints it).
    """
    _take_over(source)
    report = MoveReport()

    def moved(queue_id: str, state: MessageState, resumed: bool = False) -> None:
        item = Moved(queue_id, state, resumed)
        report.moved.append(item)
        log.info("queue id %s (%s): moved from %s to %s", queue_id, state, source.location, target.location)
        if on_moved is not None:
            on_moved(item)

    busy: set[str] = set()
    for queue_id, state in target.pending_imports():
        try:
            entry = source.find(queue_id)
        except UnknownQueueIdError:
            entry = None
        if entry is not None:
            claim = source.lock(entry)
            if claim is None:
                busy.add(queue_id)
                report.left.append((queue_id, "a sender or another operator holds it; run import-dir again"))
                continue
            source.remove(claim, entry.state)
        target.finish_import(queue_id)
        moved(queue_id, state, resumed=True)

    for state in MOVED_STATES:
        for entry in list(source.entries(state)):
            if entry.queue_id in busy:
                continue
            claim = source.lock(entry)
            if claim is None:
                report.left.append((entry.queue_id, "a sender or another operator holds it; run import-dir again"))
                continue
            if claim.envelope is None:
                claim.release()
                report.left.append((entry.queue_id, f"it cannot be decoded; it stays in {state}"))
                continue
            try:
                staged = target.stage_import(entry.queue_id, state, claim.envelope, claim.message)
            except BaseException:
                claim.release()
                raise
            if not staged:
                claim.release()
                report.left.append((entry.queue_id, "the database queue already holds a message with this queue id"))
                continue
            source.remove(claim, state)
            target.finish_import(entry.queue_id)
            moved(entry.queue_id, state)
    for entry in source.entries(MessageState.CORRUPT):
        report.left.append(
            (entry.queue_id, f"it is corrupt: look at it with mq-queue --queue-dir {source.path} show {entry.queue_id}")
        )
    return report


def _take_over(source: MessageQueue) -> None:
    """Make sure no sender uses ``source``, and keep daemons off it; or raise QueueInUseError."""
    try:
        source.daemon_lock()
    except DaemonAlreadyRunning as exc:
        raise QueueInUseError(f"{exc}: stop it (and every mq-send of this queue) first; nothing was moved") from None
    source.recover_stale_claims()  # the messages of senders that died go back to queued
    for entry in source.entries(MessageState.SENDING):
        raise QueueInUseError(
            f"an mq-send is delivering queue id {entry.queue_id} from {source.location}: stop every mq-send of this "
            "queue directory (cron jobs too) first; nothing was moved"
        )
