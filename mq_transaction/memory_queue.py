"""``MemoryQueue``: the queue contract kept in this process's memory, for tests.

It is a complete :class:`~mq_transaction.interfaces.IMailQueue`: ``QueuedMailer`` over a
``MemoryQueue`` runs the real data manager (so commit, abort, savepoints and vetoes behave
exactly as with a directory), and a ``Sender`` can drain it. Nothing survives the process:
never use it for real mail. ``mq_pyramid.testing`` builds its testing mailer on it.
"""

from __future__ import annotations

import copy
import select
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from zope.interface import implementer

from . import queuefile
from .errors import MailQueueError, UnknownQueueIdError
from .interfaces import IMailQueue, IMailWatcher
from .queue_ids import is_queue_id, new_queue_id
from .queuefile import Envelope
from .records import Claim, Entry, claim_each
from .states import STATES, MessageState
from .watcher import drain


@dataclass
class _Stored:
    state: MessageState
    envelope: Envelope
    message: bytes
    mtime: float
    held: bool = False  # claimed by a sender or locked by an operator


@dataclass
class MemoryClaim(Claim):
    """A claim on a message of a :class:`MemoryQueue`."""

    queue: MemoryQueue | None = None

    def release(self) -> None:
        """Let go of the message; it stays where it is."""
        if self.queue is not None:
            self.queue._let_go(self.queue_id)
            self.queue = None


@implementer(IMailWatcher)
class PollingWatcher:
    """Wakes every ``poll_interval`` seconds, or when the wake descriptor is written."""

    mode = "polling"

    def __init__(self, wake_fd: int, poll_interval: float) -> None:
        self.wake_fd = wake_fd
        self.poll_interval = poll_interval

    def wait(self, timeout: float) -> bool:
        """Return after ``min(timeout, poll_interval)`` seconds or when woken; always False
        (memory is never lost and found again)."""
        try:
            ready, _, _ = select.select([self.wake_fd], [], [], max(0.0, min(timeout, self.poll_interval)))
        except InterruptedError:
            return False
        for fd in ready:
            drain(fd)
        return False

    def close(self) -> None:
        """Nothing to free."""


@implementer(IMailQueue)
class MemoryQueue:
    """An ``IMailQueue`` in memory; thread-safe. ``on_publish(queue_id, envelope, message)``
    is called for each message that becomes deliverable (commit or ``enqueue``)."""

    location = "memory"

    def __init__(self, on_publish: Callable[[str, Envelope, bytes], None] | None = None) -> None:
        self.on_publish = on_publish
        self._lock = threading.RLock()
        #: Messages staged by transactions still open, oldest first: queue id -> (time, envelope, message).
        self.staged: dict[str, tuple[float, Envelope, bytes]] = {}
        self._messages: dict[str, _Stored] = {}

    def __repr__(self) -> str:
        return f"MemoryQueue({len(self._messages)} messages, {len(self.staged)} staged)"

    # -- the application's side ------------------------------------------------------------

    def check_writable(self) -> None:
        """Memory is always writable."""

    def stage(self, envelope: Envelope, message: bytes) -> str:
        """Keep a copy of the message aside, not deliverable; return its queue id."""
        with self._lock:
            queue_id = new_queue_id(envelope.queued_at)
            self.staged[queue_id] = (time.time(), copy.deepcopy(envelope), bytes(message))
            return queue_id

    def publish(self, queue_ids: list[str]) -> list[tuple[str, str]]:
        """Make staged messages queued; an id that is not staged is reported, never raised."""
        problems = []
        published = []
        with self._lock:
            for queue_id in queue_ids:
                staged = self.staged.pop(queue_id, None)
                if staged is None:
                    problems.append((queue_id, "could not be published: it is not staged in this memory queue"))
                    continue
                _at, envelope, message = staged
                self._messages[queue_id] = _Stored(MessageState.QUEUED, envelope, message, time.time())
                published.append((queue_id, envelope, message))
        if self.on_publish is not None:
            for queue_id, envelope, message in published:
                self.on_publish(queue_id, copy.deepcopy(envelope), message)
        return problems

    def discard(self, queue_ids: list[str]) -> None:
        """Forget staged messages; ids not staged are fine."""
        with self._lock:
            for queue_id in queue_ids:
                self.staged.pop(queue_id, None)

    def enqueue(self, envelope: Envelope, message: bytes) -> str:
        """Stage and publish at once."""
        queue_id = self.stage(envelope, message)
        self.publish([queue_id])
        return queue_id

    def cleanup(self, max_age: float, now: float | None = None) -> list[str]:
        """Forget staged messages older than ``max_age`` seconds."""
        now = time.time() if now is None else now
        with self._lock:
            old = [queue_id for queue_id, (at, _e, _m) in self.staged.items() if now - at > max_age]
            for queue_id in old:
                del self.staged[queue_id]
        return old

    # -- the sender's side -------------------------------------------------------------------

    def recover_stale_claims(self) -> list[str]:
        """Claims live and die with this process: there is never a stale one."""
        return []

    def due(self, now: float | None = None, flush: bool = False) -> list[str]:
        """Queued messages, and deferred ones whose time has come (all with ``flush``), oldest first."""
        now = time.time() if now is None else now
        with self._lock:
            return sorted(
                queue_id
                for queue_id, stored in self._messages.items()
                if not stored.held
                and (
                    stored.state == MessageState.QUEUED
                    or (stored.state == MessageState.DEFERRED and (flush or stored.mtime <= now))
                )
            )

    def next_retry_time(self) -> float | None:
        """The earliest next attempt time of a deferred message, or None."""
        with self._lock:
            times = [s.mtime for s in self._messages.values() if s.state == MessageState.DEFERRED]
        return min(times, default=None)

    #: Claims cost nothing: one at a time (``IMailQueue.claim_batch_size``).
    claim_batch_size = 1

    def claim_many(self, queue_ids: list[str]) -> tuple[list[Claim], list[MailQueueError]]:
        """Claim each listed message that can be claimed (``claim`` of each, in order)."""
        return claim_each(self, queue_ids)

    def claim(self, queue_id: str) -> MemoryClaim | None:
        """Claim a queued or deferred message (state ``sending``); None when it is not claimable."""
        with self._lock:
            stored = self._messages.get(queue_id)
            if stored is None or stored.held or stored.state not in (MessageState.QUEUED, MessageState.DEFERRED):
                return None
            stored.state, stored.held, stored.mtime = MessageState.SENDING, True, time.time()
            return MemoryClaim(queue_id, copy.deepcopy(stored.envelope), stored.message, self)

    def _let_go(self, queue_id: str) -> None:
        with self._lock:
            stored = self._messages.get(queue_id)
            if stored is not None:
                stored.held = False

    def _settle(
        self, claim: Claim, state: MessageState | None, mtime: float | None = None, store_envelope: bool = True
    ) -> None:
        with self._lock:
            if state is None:
                self._messages.pop(claim.queue_id, None)
            else:
                stored = self._messages[claim.queue_id]
                if store_envelope and claim.envelope is not None:
                    stored.envelope = copy.deepcopy(claim.envelope)
                stored.state, stored.mtime = state, time.time() if mtime is None else mtime
        claim.release()

    def finish_delivered(self, claim: Claim) -> None:
        """Forget the message: it reached everyone."""
        self._settle(claim, None)

    def finish_deferred(self, claim: Claim, next_attempt: float) -> None:
        """Keep the claim's envelope; deferred until ``next_attempt``."""
        claim.envelope.next_attempt = next_attempt
        self._settle(claim, MessageState.DEFERRED, next_attempt)

    def finish_failed(self, claim: Claim) -> None:
        """Keep the claim's envelope; failed."""
        claim.envelope.next_attempt = None
        self._settle(claim, MessageState.FAILED)

    def unclaim(self, claim: Claim, envelope_changed: bool = False) -> None:
        """Back to queued, due at once (the envelope is kept as claimed when it changed)."""
        self._settle(claim, MessageState.QUEUED, store_envelope=envelope_changed)

    # -- the daemon's side -----------------------------------------------------------------

    def watch(self, wake_fd: int, poll_interval: float) -> PollingWatcher:
        """Polling: nothing outside this process can add mail."""
        return PollingWatcher(wake_fd, poll_interval)

    def daemon_lock(self) -> None:
        """No lock: a memory queue belongs to one process."""

    # -- the operator's side ---------------------------------------------------------------

    def entries(self, state: MessageState | str | None = None) -> Iterator[Entry]:
        """Every message (of ``state``), in the order of ``STATES``, oldest first within a state."""
        with self._lock:
            found = [self._entry(queue_id, stored) for queue_id, stored in self._messages.items()]
        for name in [MessageState(state)] if state else STATES:
            yield from sorted((e for e in found if e.state == name), key=lambda e: e.queue_id)

    def not_messages(self, state: MessageState | str | None = None) -> list[str]:
        """Memory holds only messages."""
        return []

    def _entry(self, queue_id: str, stored: _Stored) -> Entry:
        size = len(queuefile.encode(stored.envelope, stored.message))
        return Entry(queue_id, stored.state, stored.mtime, size)

    def find(self, queue_id: str) -> Entry:
        """The entry of one message, or :class:`UnknownQueueIdError`."""
        if not isinstance(queue_id, str) or not is_queue_id(queue_id):
            raise UnknownQueueIdError(f"{queue_id!r} is not a queue id")
        with self._lock:
            stored = self._messages.get(queue_id)
            if stored is None:
                raise UnknownQueueIdError(f"queue id {queue_id} is not in the memory queue")
            return self._entry(queue_id, stored)

    def _stored(self, entry: Entry) -> _Stored:
        stored = self._messages.get(entry.queue_id)
        if stored is None:
            raise FileNotFoundError(f"queue id {entry.queue_id} left the queue")
        return stored

    def read(self, entry: Entry) -> tuple[Envelope, bytes]:
        """A copy of the message's envelope, and its bytes."""
        with self._lock:
            stored = self._stored(entry)
            return copy.deepcopy(stored.envelope), stored.message

    def read_raw(self, entry: Entry) -> bytes:
        """The message as a queue file would hold it."""
        with self._lock:
            stored = self._stored(entry)
            return queuefile.encode(stored.envelope, stored.message)

    def lock(self, entry: Entry) -> MemoryClaim | None:
        """Hold a message where it lies; None when someone holds it already."""
        with self._lock:
            stored = self._messages.get(entry.queue_id)
            if stored is None or stored.held:
                return None
            stored.held = True
            return MemoryClaim(entry.queue_id, copy.deepcopy(stored.envelope), stored.message, self)

    def move(self, claim: Claim, source: MessageState, target: MessageState, envelope_changed: bool = False) -> None:
        """Move a held message from ``source`` to ``target``."""
        with self._lock:
            stored = self._messages.get(claim.queue_id)
            if stored is None or stored.state != source:
                claim.release()
                raise FileNotFoundError(f"queue id {claim.queue_id} is no longer {source}")
            if envelope_changed:
                stored.envelope = copy.deepcopy(claim.envelope)
            stored.state, stored.mtime = MessageState(target), time.time()
        claim.release()

    def remove(self, claim: Claim, state: MessageState) -> None:
        """Forget a held message."""
        with self._lock:
            self._messages.pop(claim.queue_id, None)
        claim.release()
