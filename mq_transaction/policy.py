"""What becomes of a message after an attempt: the retry and expiry policy, pure functions.

The sender classifies each reply (:mod:`mq_transaction.replies`), then asks :func:`settle`
where the message goes; nothing here touches SMTP or the disk, so a table of cases tests it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .states import AttemptResult, FailureReason, RecipientStatus


@dataclass(frozen=True)
class RetryPolicy:
    """The schedule: backoff between ``min_backoff`` and ``max_backoff``, give up after ``max_lifetime``."""

    min_backoff: float = 300.0
    max_backoff: float = 3600.0
    max_lifetime: float = 5 * 86400.0

    @classmethod
    def from_settings(cls, settings: object) -> RetryPolicy:
        """The policy named by ``mq.min_backoff``, ``mq.max_backoff`` and ``mq.max_lifetime``."""
        return cls(settings.min_backoff, settings.max_backoff, settings.max_lifetime)  # type: ignore[attr-defined]

    def backoff(self, age: float) -> float:
        """Seconds until the next attempt of a message queued ``age`` seconds ago."""
        return min(max(age, self.min_backoff), self.max_backoff)


@dataclass(frozen=True)
class Settlement:
    """The message's next state after an attempt.

    ``state`` is ``delivered``, ``deferred`` or ``failed``; ``reason`` is ``rejected`` or
    ``expired`` for ``failed``; ``next_attempt`` is set for ``deferred``; ``expired`` is
    true when the undelivered recipients must be marked failed for the lifetime.
    """

    state: AttemptResult
    reason: FailureReason | None = None
    next_attempt: float | None = None

    @property
    def expired(self) -> bool:
        return self.reason == FailureReason.EXPIRED


def settle(statuses: Iterable[RecipientStatus], queued_at: float, now: float, policy: RetryPolicy) -> Settlement:
    """Where a message goes, given every recipient's status after the attempt.

    Someone still to try (pending or deferred): ``deferred`` at now + backoff, or
    ``failed``/``expired`` once the message is older than the lifetime. Nobody left and a
    recipient refused: ``failed``/``rejected``. Everyone delivered: ``delivered``.
    """
    statuses = list(statuses)
    if any(RecipientStatus(status).undelivered for status in statuses):
        age = now - queued_at
        if age >= policy.max_lifetime:
            return Settlement(AttemptResult.FAILED, FailureReason.EXPIRED)
        return Settlement(AttemptResult.DEFERRED, next_attempt=now + policy.backoff(age))
    if RecipientStatus.FAILED in statuses:
        return Settlement(AttemptResult.FAILED, FailureReason.REJECTED)
    return Settlement(AttemptResult.DELIVERED)


def expiry_note(reply: str | None, age: float) -> str:
    """The reply recorded for a recipient that expired: its last reply, then why it failed."""
    return f"{reply or ''} (expired: undelivered after {age / 86400:.1f} days)".strip()


def attempts_made(attempts: Sequence[object]) -> int:
    """How many attempts a message has had: the number of the last one recorded (the
    envelope keeps only the last few), or how many there are when they have no number."""
    if not attempts:
        return 0
    number = getattr(attempts[-1], "number", None)
    return number if isinstance(number, int) else len(attempts)
