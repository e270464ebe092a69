"""The queue's vocabulary, defined once: message states, recipient statuses, state directories.

Every module that names a state or a status imports it from here. The enums are
``str``-valued, so a state compares equal to, prints as, and serialises to JSON as the
plain string it has always been (``MessageState.QUEUED == "queued"``); files, logs,
``mq-queue`` output and metrics labels are unchanged.
"""

from __future__ import annotations

import enum


class _StrEnum(str, enum.Enum):
    """A ``str`` enum that prints and formats as its value (``enum.StrEnum`` needs Python 3.11)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)


class MessageState(_StrEnum):
    """Where a committed message is in its life; see the table in ``docs/queue.md``."""

    QUEUED = "queued"  #: committed and due now
    SENDING = "sending"  #: claimed by a running sender
    DEFERRED = "deferred"  #: some recipients are to be tried again at the next attempt time
    HELD = "held"  #: kept aside by an operator, never sent until released
    FAILED = "failed"  #: finished without reaching every recipient (rejected or expired)
    CORRUPT = "corrupt"  #: cannot be read or decoded; kept intact, never sent


class RecipientStatus(_StrEnum):
    """What became of one envelope recipient; stored in the envelope."""

    PENDING = "pending"  #: not tried yet (or reset by ``mq-queue retry``)
    DELIVERED = "delivered"  #: the server accepted the message for this recipient
    DEFERRED = "deferred"  #: refused for now (4xx, or no answer): tried again later
    FAILED = "failed"  #: refused for good (5xx), or still undelivered when the message expired

    @property
    def undelivered(self) -> bool:
        """True while the message still has to go to a recipient with this status."""
        return self in (RecipientStatus.PENDING, RecipientStatus.DEFERRED)


class AttemptResult(_StrEnum):
    """What one delivery attempt left a message as (an attempt record's ``result``, a hook's ``state``)."""

    DELIVERED = "delivered"  #: every recipient has it: removed from the queue
    DEFERRED = "deferred"  #: recipients remain to be tried: moved to deferred
    FAILED = "failed"  #: nobody left to try and a recipient refused, or expired: moved to failed


class FailureReason(_StrEnum):
    """Why a message ended in ``failed`` (the envelope's ``failure_reason``)."""

    REJECTED = "rejected"  #: a recipient was refused for good
    EXPIRED = "expired"  #: still undelivered after ``mq.max_lifetime``


#: Every message state, in the order listings and status counts show them.
STATES: tuple[MessageState, ...] = tuple(MessageState)

#: States whose messages still wait to be delivered (their age is what alerts watch).
WAITING: tuple[MessageState, ...] = (
    MessageState.QUEUED,
    MessageState.DEFERRED,
    MessageState.SENDING,
    MessageState.HELD,
)

#: The directory queue's layout: the subdirectory that holds each state's files.
STATE_DIRS: dict[MessageState, str] = {
    MessageState.QUEUED: "new",
    MessageState.SENDING: "sending",
    MessageState.DEFERRED: "deferred",
    MessageState.HELD: "hold",
    MessageState.FAILED: "failed",
    MessageState.CORRUPT: "corrupt",
}

#: The directory queue's subdirectory for messages of transactions not yet committed (not a state).
TMP_DIR = "tmp"
