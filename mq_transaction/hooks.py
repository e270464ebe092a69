"""Delivery hooks: the application's callables run after each delivery attempt."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .settings import key, resolve_callable

log = logging.getLogger("mq_transaction.sender")

KINDS = ("delivered", "deferred", "failed")


@dataclass(frozen=True)
class RecipientResult:
    """One recipient's state after an attempt, and the last reply it got."""

    address: str
    status: str  # pending, delivered, deferred or failed
    reply: str | None
    tried: bool  # whether this attempt tried this recipient


@dataclass(frozen=True)
class DeliveryEvent:
    """What one delivery attempt did to one message; passed to every hook.

    ``state`` is where the message is now: ``delivered`` (it left the queue),
    ``deferred`` (``next_attempt`` says when it is tried again) or ``failed``
    (``reason`` is ``rejected`` or ``expired``).
    """

    state: str
    queue_id: str
    message_id: str
    sender: str
    recipients: tuple[RecipientResult, ...]
    attempt: int
    queued_at: float
    next_attempt: float | None = None
    reason: str | None = None


Hook = Callable[[DeliveryEvent], object]


class Hooks:
    """The hooks registered for each outcome; ``hooks.add('failed', callable)``."""

    def __init__(self) -> None:
        self._hooks: dict[str, list[Hook]] = {kind: [] for kind in KINDS}

    def add(self, kind: str, hook: Hook) -> None:
        """Register ``hook`` to be called with a :class:`DeliveryEvent` for ``kind``."""
        if kind not in self._hooks:
            raise ValueError(f"unknown hook kind {kind!r}; use one of {', '.join(KINDS)}")
        self._hooks[kind].append(hook)

    @classmethod
    def from_settings(cls, settings: object) -> Hooks:
        """Resolve ``mq.on_delivered``/``mq.on_deferred``/``mq.on_failed`` dotted names."""
        hooks = cls()
        for kind in KINDS:
            name = getattr(settings, f"on_{kind}", None)
            if name:
                hooks.add(kind, resolve_callable(key(f"on_{kind}"), name))
        return hooks

    def call(self, event: DeliveryEvent) -> None:
        """Call every hook for ``event.state``; one that raises is logged and changes nothing."""
        for hook in self._hooks[event.state]:
            try:
                hook(event)
            except (Exception, SystemExit):  # noqa: BLE001 - a hook must never disturb delivery
                # SystemExit too: a hook calling sys.exit() must not silently end a daemon.
                log.exception(
                    "on_%s hook %r raised for queue id %s (Message-ID %s); the message's state is unchanged",
                    event.state,
                    hook,
                    event.queue_id,
                    event.message_id,
                )
