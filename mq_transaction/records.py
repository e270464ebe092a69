"""The records a queue hands to its callers: ``Entry`` (a listed message) and ``Claim`` (a held one).

Every queue implementation (the directory queue, a database queue, the in-memory one)
returns these, so the sender and the operator commands work with any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import CorruptMessageError, MailQueueError, QueueFullError
from .queuefile import Envelope
from .states import MessageState


@dataclass(frozen=True)
class Entry:
    """A message found in the queue, as listings show it.

    ``mtime`` is when the message entered its state, except for a deferred message, for
    which it is the next attempt time. ``size`` is the size of the stored record in
    bytes (for the directory queue, the queue file).
    """

    queue_id: str
    state: MessageState
    mtime: float
    size: int
    #: When the message last changed (its state or its record; for the directory queue the
    #: file's ctime): no attempt recorded in it is later. None when the queue cannot tell.
    changed: float | None = None

    @property
    def next_attempt(self) -> float | None:
        """When a deferred message is tried again; None in every other state."""
        return self.mtime if self.state == MessageState.DEFERRED else None


@dataclass
class Claim:
    """A message held by this process (a sender delivering it, or an operator changing it).

    While a claim is held no other sender or operator can take the message. A sender's
    claim always has its decoded ``envelope``; an operator's ``lock()`` on a message that
    cannot be decoded gives ``envelope`` None and ``message`` empty. Changes made to
    ``envelope`` are stored by the queue operation that ends the claim
    (``finish_deferred``, ``finish_failed``, ``unclaim(..., envelope_changed=True)`` or
    ``move(..., envelope_changed=True)``). ``release()`` lets go without a change; each
    queue implementation subclasses this to hold what its claim needs (file locks, a lease).
    """

    queue_id: str
    envelope: Envelope
    message: bytes

    def release(self) -> None:
        """Let go of the claim; the message stays where it is. Idempotent."""


def claim_each(queue: Any, queue_ids: list[str]) -> tuple[list[Claim], list[MailQueueError]]:
    """``IMailQueue.claim_many`` for a queue whose claims are cheap one by one: ``queue.claim``
    of each id in turn. Should one raise anything but a problem of its message, the claims
    already taken are given back before the error goes on."""
    claims: list[Claim] = []
    problems: list[MailQueueError] = []
    try:
        for queue_id in queue_ids:
            try:
                claim = queue.claim(queue_id)
            except (CorruptMessageError, QueueFullError) as exc:
                problems.append(exc)
                continue
            if claim is not None:
                claims.append(claim)
    except BaseException:
        for claim in claims:
            try:
                queue.unclaim(claim)
            except OSError:
                claim.release()  # left in sending: the next run gives it back
        raise
    return claims, problems
