"""What an operator does to a queue: look at its messages, and retry, hold, release or discard them.

The library behind ``mq-queue``: queries that return typed records (:class:`MessageSummary`,
:class:`MessageDetails`, :class:`QueueStatus`) and changes that return a
:class:`ChangeResult` per id. Every message is named by its queue id, checked before
anything is read; every change is made on a message locked the way a sender locks it, so
a message a running ``mq-send`` is delivering is reported busy and left alone. Paths stay
the business of :mod:`mq_transaction.queue`; text and tables are the command line's
(:mod:`mq_transaction.cli_format`).
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from . import queuefile
from .delivery_log import read_backwards
from .durations import iso_utc, parse_iso_utc
from .errors import CorruptMessageError, QueueUnavailableError, UnknownQueueIdError
from .interfaces import IMailQueue
from .policy import attempts_made
from .queue_ids import is_queue_id, new_queue_id, queued_time
from .queuefile import Attempt, Envelope
from .records import Claim, Entry
from .states import STATES, WAITING, AttemptResult, MessageState, RecipientStatus

# The logger keeps the name documented in docs/mq-queue.md (and configured in users' ini
# files) from when this module was ``mq_transaction.operator``.
log = logging.getLogger("mq_transaction.operator")

#: The keys of one message in ``mq-queue list --json``, in order (docs/mq-queue.md).
LIST_FIELDS = (
    "id",
    "state",
    "queued_at",
    "attempts",
    "next_attempt",
    "sender",
    "recipients",
    "message_id",
    "subject",
    "size",
    "last_error",
)
ID_EXAMPLE = "20261128T151136123456Z-9f3a2b1c0d"


class MessageNotFoundError(UnknownQueueIdError):
    """A well-formed queue id names no message of this queue (delivered, discarded, or a typo)."""


# -- the records ------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipientSummary:
    """One envelope recipient as listed: its address, status and last reply."""

    address: str
    status: RecipientStatus
    reply: str | None

    def to_json(self) -> dict[str, object]:
        """The recipient as ``list --json`` gives it."""
        return {"address": self.address, "status": self.status, "reply": self.reply}


@dataclass(frozen=True)
class MessageSummary:
    """One message as ``mq-queue list`` shows it; None where a field is unknown or does not apply.

    Times are Unix times. ``recipients`` is None (like ``sender``, ``attempts`` and
    ``message_id``) when the envelope cannot be read; ``subject`` and ``size`` are None
    when the message itself cannot be trusted (a file that cannot be decoded).
    """

    queue_id: str
    state: MessageState
    queued_at: float
    attempts: int | None
    next_attempt: float | None
    sender: str | None
    recipients: tuple[RecipientSummary, ...] | None
    message_id: str | None
    subject: str | None
    size: int | None
    last_error: str | None

    def to_json(self) -> dict[str, object]:
        """The message as ``list --json`` gives it: the keys of :data:`LIST_FIELDS`, in order."""
        return {
            "id": self.queue_id,
            "state": self.state,
            "queued_at": iso_utc(self.queued_at),
            "attempts": self.attempts,
            "next_attempt": None if self.next_attempt is None else iso_utc(self.next_attempt),
            "sender": self.sender,
            "recipients": None if self.recipients is None else [r.to_json() for r in self.recipients],
            "message_id": self.message_id,
            "subject": self.subject,
            "size": self.size,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class MessageDetails:
    """Everything ``mq-queue show`` prints: the summary, the attempts, the headers.

    ``file_size`` is the size of the stored record (the queue file); ``attempts`` the
    attempt history as recorded; ``headers`` the header lines as stored (None when the
    message cannot be decoded); ``problem`` why it cannot be decoded, or None.
    """

    summary: MessageSummary
    file_size: int
    failure_reason: str | None
    attempts: tuple[Attempt, ...]
    headers: tuple[str, ...] | None
    problem: str | None


@dataclass(frozen=True)
class WaitingMessage:
    """The oldest message still to be delivered, as ``status`` names it."""

    queue_id: str
    state: MessageState
    queued_at: float
    age_seconds: float

    def to_json(self) -> dict[str, object]:
        """As ``status --json`` gives it."""
        return {
            "id": self.queue_id,
            "state": self.state,
            "queued_at": iso_utc(self.queued_at),
            "age_seconds": self.age_seconds,
        }


@dataclass(frozen=True)
class LastEvent:
    """The newest delivery or failure on record; ``source`` is ``queue`` or ``delivery_log``."""

    at: float
    queue_id: str | None
    source: str

    def to_json(self) -> dict[str, object]:
        """As ``status --json`` gives it."""
        return {"at": iso_utc(self.at), "id": self.queue_id, "source": self.source}


@dataclass(frozen=True)
class QueueStatus:
    """What ``mq-queue status`` reports: counts per state, the oldest waiting message, the
    last delivery and failure, the messages over the warning age, and the files in the
    queue that are not messages (their paths)."""

    counts: dict[MessageState, int]
    total: int
    oldest: WaitingMessage | None
    last_delivery: LastEvent | None
    last_failure: LastEvent | None
    warn_age_seconds: float | None
    over_warn_age: int
    not_messages: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """As ``status --json`` gives it (docs/mq-queue.md has its schema)."""
        return {
            "counts": dict(self.counts),
            "total": self.total,
            "oldest": None if self.oldest is None else self.oldest.to_json(),
            "last_delivery": None if self.last_delivery is None else self.last_delivery.to_json(),
            "last_failure": None if self.last_failure is None else self.last_failure.to_json(),
            "warn_age_seconds": self.warn_age_seconds,
            "over_warn_age": self.over_warn_age,
            "not_messages": list(self.not_messages),
        }


@dataclass(frozen=True)
class ChangeResult:
    """What a change did to one id: ``done`` False means it was left as it was, and ``text`` says why."""

    queue_id: str
    done: bool
    text: str


# -- ids --------------------------------------------------------------------------------


def check_ids(values: Iterable[str]) -> list[str]:
    """Return the ids without repeats, or raise :class:`UnknownQueueIdError` for the first
    value that is not a queue id (a path, ``..``, a dot-file...), before anything is touched."""
    checked: dict[str, None] = {}
    for value in values:
        if not isinstance(value, str) or not value.isprintable() or not is_queue_id(value):
            raise UnknownQueueIdError(
                f"{value!r} is not a queue id: give the id send() returned, e.g. {ID_EXAMPLE}, not a path"
            )
        checked[value] = None
    return list(checked)


def find(queue: IMailQueue, queue_id: str) -> Entry:
    """The entry of a message, through :meth:`IMailQueue.find`.

    Raises :class:`UnknownQueueIdError` for a value that is not a queue id, and
    :class:`MessageNotFoundError` for an id of no message of this queue.
    """
    check_ids([queue_id])
    try:
        return queue.find(queue_id)
    except UnknownQueueIdError as exc:
        raise MessageNotFoundError(str(exc)) from None


def not_messages(queue: IMailQueue, state: MessageState | None = None) -> list[str]:
    """What lies in the queue (in ``state``) and is no message (``hold/README``), as printable
    paths (a name that is not UTF-8 has its bytes as ``\\xHH``); the listings skip them."""
    return [
        path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        for path in queue.not_messages(state)
    ]


# -- what can be known of a message ----------------------------------------------------


@dataclass(frozen=True)
class _Read:
    """One message as read from the queue; ``problem`` says why it could not be decoded."""

    entry: Entry
    envelope: Envelope | None
    message: bytes | None
    problem: str | None = None

    @property
    def queued_at(self) -> float:
        return self.envelope.queued_at if self.envelope else queued_time(self.entry.queue_id)


def _read(queue: IMailQueue, entry: Entry) -> _Read | None:
    """Read a listed message without locking it; None when it left the queue meanwhile.

    A message that cannot be decoded gives what can be known: the envelope when its own
    part of the stored record is intact (without the checksum's word for it), and the reason.
    """
    try:
        envelope, message = queue.read(entry)
    except FileNotFoundError:
        return None
    except CorruptMessageError as exc:
        return _Read(entry, _envelope_only(queue, entry), None, str(exc))
    except QueueUnavailableError:  # the whole queue (its database) is away, not this message
        raise
    except OSError as exc:
        return _Read(entry, None, None, f"cannot read it: {exc.strerror or exc}")
    return _Read(entry, envelope, message)


def _envelope_only(queue: IMailQueue, entry: Entry) -> Envelope | None:
    """The envelope of a stored record that cannot be decoded as a whole, if its part is intact."""
    try:
        return queuefile.decode_envelope_only(queue.read_raw(entry))
    except (CorruptMessageError, OSError):
        return None


def _reads(queue: IMailQueue, state: MessageState | None = None) -> Iterator[_Read]:
    for entry in queue.entries(state):
        found = _read(queue, entry)
        if found is not None:
            yield found


def header_block(message: bytes) -> bytes:
    """The message's header section, up to (not including) the first empty line."""
    match = re.search(rb"\r?\n\r?\n", message)
    return message if match is None else message[: match.start()]


def header_lines(message: bytes) -> tuple[str, ...]:
    """The header section's lines as stored, split at line ends (``\\n`` or ``\\r\\n``) only:
    a lone CR, a form feed or a Unicode line separator stays inside its line, for the
    command line to show."""
    lines = re.split(r"\r?\n", header_block(message).decode("utf-8", "replace"))
    return tuple(lines[:-1] if lines and lines[-1] == "" else lines)


# A header section the email package would read as plain fields: each line a field
# (printable name, colon) or a folded continuation, ASCII, no lone CR. Only for such a
# section is the fast path below known to give what the parser gives.
_FIELD = rb"[!-9;-~]+:[^\r\n]*"
_SIMPLE_HEADER = re.compile(rb"%s(?:\r?\n(?:%s|[ \t][^\r\n]*))*(?:\r?\n)?" % (_FIELD, _FIELD))
_SUBJECT = re.compile(rb"^subject:[ \t]*([^\r\n]*)(\r?\n[ \t])?", re.IGNORECASE | re.MULTILINE)
_PLAIN_VALUE = re.compile(rb"[ -~\t]*")


def subject(message: bytes) -> str | None:
    """The decoded ``Subject`` header (RFC 2047 words decoded, folding undone), or None.

    The email package's parser takes about half a millisecond a message, most of the
    time of a listing of a large queue; a plain ASCII, unfolded subject with no encoded
    word is read directly, with the same result (``tests/test_queue_admin.py`` checks
    both ways agree).
    """
    block = header_block(message)
    if block.isascii() and _SIMPLE_HEADER.fullmatch(block):
        match = _SUBJECT.search(block)
        if match is None:
            return None
        value = match.group(1)
        if match.group(2) is None and b"=?" not in value and _PLAIN_VALUE.fullmatch(value):
            return value.decode("ascii")
    return parsed_subject(block)


def parsed_subject(block: bytes) -> str | None:
    """The ``Subject`` of a header section, as the email package decodes and unfolds it."""
    try:
        value = email.parser.BytesParser(policy=email.policy.default).parsebytes(block, headersonly=True)["Subject"]
        return None if value is None else str(value)
    except Exception:  # noqa: BLE001 - a malformed header must not stop a listing: show it undecoded
        value = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(block, headersonly=True)["Subject"]
        return None if value is None else re.sub(r"\r?\n[ \t]*", " ", str(value))


def last_error(envelope: Envelope) -> str | None:
    """The newest non-2xx reply on record (with its expiry note, if any), else the failure reason."""
    stored = {r.address: r.reply for r in envelope.recipients}
    for attempt in reversed(envelope.attempts):
        for address, reply in attempt.replies.items():
            if not reply.startswith("2"):
                current = stored.get(address)
                return current if current and current.startswith(reply) else reply
    return envelope.failure_reason


def _summary(found: _Read) -> MessageSummary:
    envelope, entry = found.envelope, found.entry
    if found.problem:
        error: str | None = f"corrupt: {found.problem}"
    else:
        error = last_error(envelope) if envelope else None
    return MessageSummary(
        queue_id=entry.queue_id,
        state=entry.state,
        queued_at=found.queued_at,
        attempts=attempts_made(envelope.attempts) if envelope else None,
        next_attempt=entry.mtime if entry.state == MessageState.DEFERRED else None,
        sender=envelope.sender if envelope else None,
        recipients=(
            tuple(RecipientSummary(r.address, r.status, r.reply) for r in envelope.recipients) if envelope else None
        ),
        message_id=(envelope.message_id or None) if envelope else None,
        subject=subject(found.message) if found.message is not None else None,
        size=len(found.message) if found.message is not None else None,
        last_error=error,
    )


def iter_messages(queue: IMailQueue, state: MessageState | None = None) -> Iterator[MessageSummary]:
    """Every message (of ``state``), by state then age, one at a time (a listing of a large
    queue starts at once and holds one message at a time); files that are not messages are
    skipped (:func:`not_messages` names them)."""
    for found in _reads(queue, state):
        yield _summary(found)


def list_messages(queue: IMailQueue, state: MessageState | None = None) -> list[MessageSummary]:
    """:func:`iter_messages` as a list."""
    return list(iter_messages(queue, state))


def list_given(queue: IMailQueue, queue_ids: Iterable[str]) -> list[MessageSummary]:
    """The summaries of the given ids that name a message (to confirm a discard)."""
    records = []
    for queue_id in check_ids(queue_ids):
        try:
            found = _read(queue, queue.find(queue_id))
        except UnknownQueueIdError:
            continue
        if found is not None:
            records.append(_summary(found))
    return records


def details(queue: IMailQueue, queue_id: str) -> MessageDetails:
    """Everything ``mq-queue show`` prints: the summary, the attempts, the headers."""
    entry = find(queue, queue_id)
    found = _read(queue, entry)
    if found is None:
        raise MessageNotFoundError(f"queue id {queue_id} left the queue while it was being read")
    envelope = found.envelope
    return MessageDetails(
        summary=_summary(found),
        file_size=entry.size,
        failure_reason=envelope.failure_reason if envelope else None,
        attempts=tuple(envelope.attempts) if envelope else (),
        headers=header_lines(found.message) if found.message is not None else None,
        problem=found.problem,
    )


def raw_message(queue: IMailQueue, queue_id: str) -> bytes:
    """The message exactly as it will be sent; for one that cannot be decoded, the whole
    stored record (for the directory queue, the queue file)."""
    entry = find(queue, queue_id)
    try:
        try:
            return queue.read(entry)[1]
        except CorruptMessageError:
            return queue.read_raw(entry)
    except FileNotFoundError:
        raise MessageNotFoundError(f"queue id {queue_id} left the queue while it was being read") from None


# -- status -----------------------------------------------------------------------------


def queue_status(
    queue: IMailQueue,
    warn_age: float | None = None,
    delivery_log: str | None = None,
    log_format: str = "logfmt",
    now: float | None = None,
) -> QueueStatus:
    """Counts per state, the oldest waiting message, the last delivery and failure.

    The last delivery and failure come from the attempts recorded in the queue (a message
    partly delivered, or failed; at most the :data:`STATUS_READ_LIMIT` most recently
    changed messages are read) and, when ``delivery_log`` is given, from that log (which
    also remembers the messages that left the queue); the newer wins. ``over_warn_age``
    counts waiting messages older than ``warn_age`` seconds. Counts and ages come from the
    listing alone, so ``status`` stays quick on a queue of 100,000 messages.
    """
    now = time.time() if now is None else now
    counts = dict.fromkeys(STATES, 0)
    oldest: Entry | None = None
    over = 0
    # Queue ids sort as their queueing times do: "older than warn_age" is a string comparison.
    threshold = None if warn_age is None else new_queue_id(now - warn_age)[:22]
    entries = list(queue.entries())
    for entry in entries:
        counts[entry.state] += 1
        if entry.state in WAITING:
            if oldest is None or entry.queue_id < oldest.queue_id:
                oldest = entry
            if threshold is not None and entry.queue_id[:22] < threshold:
                over += 1
    last_delivery, last_failure = _last_events_in_queue(queue, entries)
    if delivery_log:
        # The log is in time order: its newest delivery and newest failure end the search.
        seen_delivery = seen_failure = False
        for record in read_backwards(delivery_log, log_format):
            recipients = record.get("recipients")
            if not seen_delivery and any(
                isinstance(r, dict) and r.get("status") == RecipientStatus.DELIVERED for r in recipients or ()
            ):
                seen_delivery = True
                last_delivery = _newer(last_delivery, record.get("time"), record.get("queue_id"), "delivery_log")
            if not seen_failure and record.get("state") == AttemptResult.FAILED:
                seen_failure = True
                last_failure = _newer(last_failure, record.get("time"), record.get("queue_id"), "delivery_log")
            if seen_delivery and seen_failure:
                break
    return QueueStatus(
        counts=counts,
        total=sum(counts.values()),
        oldest=(
            None
            if oldest is None
            else WaitingMessage(
                oldest.queue_id,
                oldest.state,
                queued_time(oldest.queue_id),
                round(max(0.0, now - queued_time(oldest.queue_id)), 3),
            )
        ),
        last_delivery=last_delivery,
        last_failure=last_failure,
        warn_age_seconds=warn_age,
        over_warn_age=over,
        not_messages=tuple(not_messages(queue)),
    )


#: ``status`` reads the attempts of at most this many messages, the most recently changed
#: first: with 100,000 messages, reading every one would take many seconds.
STATUS_READ_LIMIT = 1000


def _last_events_in_queue(queue: IMailQueue, entries: list[Entry]) -> tuple[LastEvent | None, LastEvent | None]:
    """The newest delivery and failure recorded in the attempts of the queue's messages.

    An attempt is recorded when its message last changed (``Entry.changed``), so messages
    are read newest change first, and the search ends once no unread message changed
    after the events found, or after :data:`STATUS_READ_LIMIT` messages.
    """
    last_delivery: LastEvent | None = None
    last_failure: LastEvent | None = None
    newest_first = sorted(entries, key=lambda e: -(e.changed if e.changed is not None else float("inf")))
    for read, entry in enumerate(newest_first):
        if read >= STATUS_READ_LIMIT:
            break
        if entry.changed is not None and last_delivery is not None and last_failure is not None:
            if entry.changed < min(last_delivery.at, last_failure.at):
                break
        found = _read(queue, entry)
        for attempt in found.envelope.attempts if found is not None and found.envelope else ():
            if any(reply.startswith("2") for reply in attempt.replies.values()):
                last_delivery = _newer(last_delivery, iso_utc(attempt.at), entry.queue_id, "queue")
            if attempt.result == AttemptResult.FAILED:
                last_failure = _newer(last_failure, iso_utc(attempt.at), entry.queue_id, "queue")
    return last_delivery, last_failure


def _newer(current: LastEvent | None, at: object, queue_id: object, source: str) -> LastEvent | None:
    if not isinstance(at, str):
        return current
    try:
        when = parse_iso_utc(at)
    except ValueError:
        return current
    if current is not None and current.at >= when:
        return current
    return LastEvent(when, queue_id if isinstance(queue_id, str) else None, source)


# -- changes ----------------------------------------------------------------------------


Action = Callable[[IMailQueue, Claim, Entry], str]


def _act(
    queue: IMailQueue, queue_id: str, actions: Mapping[MessageState, Action], refusals: Mapping[MessageState, str]
) -> ChangeResult:
    """Find and lock one message, then apply the action for its state, or refuse."""
    try:
        entry = queue.find(queue_id)
    except UnknownQueueIdError as exc:
        return ChangeResult(queue_id, False, str(exc))
    try:
        claim = queue.lock(entry)
    except QueueUnavailableError:  # the whole queue (its database) is away: the command stops
        raise
    except OSError as exc:
        return ChangeResult(queue_id, False, str(exc))
    if claim is None:
        return ChangeResult(queue_id, False, _busy(queue, queue_id, entry.state))
    try:
        if entry.state not in actions:
            return ChangeResult(queue_id, False, f"queue id {queue_id} is {entry.state}: {refusals[entry.state]}")
        return ChangeResult(queue_id, True, actions[entry.state](queue, claim, entry))
    except CorruptMessageError as exc:
        return ChangeResult(queue_id, False, f"queue id {queue_id}: {exc}; only discard removes it")
    except QueueUnavailableError:
        raise
    except OSError as exc:
        return ChangeResult(queue_id, False, f"queue id {queue_id}: {exc.strerror or exc}; it was left as it was")
    finally:
        claim.release()


def _decoded(claim: Claim) -> Envelope:
    """The locked message's envelope; a file that cannot be decoded is not moved around."""
    if claim.envelope is None:
        raise CorruptMessageError("it cannot be decoded (corrupt)")
    return claim.envelope


def _busy(queue: IMailQueue, queue_id: str, state: MessageState) -> str:
    try:
        now = queue.find(queue_id)
    except UnknownQueueIdError:
        return f"queue id {queue_id} left the queue meanwhile (delivered or removed)"
    if now.state == MessageState.SENDING:
        return f"queue id {queue_id} is busy: a running mq-send is delivering it; try again later"
    return f"queue id {queue_id} is busy: it moved from {state} to {now.state} meanwhile; try again"


def _queued_again(queue: IMailQueue, claim: Claim, entry: Entry) -> str:
    _decoded(claim)
    queue.move(claim, entry.state, MessageState.QUEUED)
    return f"{entry.state} -> {MessageState.QUEUED}"


def _retry_failed(queue: IMailQueue, claim: Claim, entry: Entry) -> str:
    envelope = _decoded(claim)
    reset = [r for r in envelope.recipients if r.status != RecipientStatus.DELIVERED]
    for recipient in reset:
        recipient.status = RecipientStatus.PENDING
    envelope.failure_reason = None
    envelope.next_attempt = None
    queue.move(claim, MessageState.FAILED, MessageState.QUEUED, envelope_changed=True)
    kept = [r.address for r in envelope.recipients if r.status == RecipientStatus.DELIVERED]
    text = f"{MessageState.FAILED} -> {MessageState.QUEUED}; to be sent to {', '.join(r.address for r in reset)}"
    return text + (f" (already delivered to {', '.join(kept)})" if kept else "")


def _held(queue: IMailQueue, claim: Claim, entry: Entry) -> str:
    _decoded(claim)
    queue.move(claim, entry.state, MessageState.HELD)
    return f"{entry.state} -> {MessageState.HELD}"


def _released(queue: IMailQueue, claim: Claim, entry: Entry) -> str:
    # A message with nobody left to try was failed when it was held: it goes back there
    # (retry sends it again); anything else is due at once, whatever its old schedule.
    target = MessageState.QUEUED if _decoded(claim).undelivered() else MessageState.FAILED
    queue.move(claim, MessageState.HELD, target)
    return f"{MessageState.HELD} -> {target}"


def _removed(queue: IMailQueue, claim: Claim, entry: Entry) -> str:
    envelope: Envelope | None = claim.envelope if claim.envelope is not None else _envelope_only(queue, entry)
    queue.remove(claim, entry.state)
    if envelope is None:
        return f"discarded (was {entry.state}; Message-ID and recipients unknown)"
    recipients = ", ".join(f"{r.address} ({r.status})" for r in envelope.recipients)
    return f"discarded (was {entry.state}; Message-ID {envelope.message_id or 'none'}; recipients {recipients})"


def _nothing(done: str) -> Action:
    def action(queue: IMailQueue, claim: Claim, entry: Entry) -> str:
        return done

    return action


_SENDING_ORPHAN = "its sender died; the next mq-send run puts it back in the queue"
_CORRUPT = "only discard removes it"
_RETRY = {
    MessageState.DEFERRED: _queued_again,
    MessageState.FAILED: _retry_failed,
    MessageState.QUEUED: _nothing("already queued: due now"),
}
_HOLD = {
    MessageState.QUEUED: _held,
    MessageState.DEFERRED: _held,
    MessageState.FAILED: _held,
    MessageState.HELD: _nothing("already held"),
}
_RELEASE = {MessageState.HELD: _released}
_DISCARD = dict.fromkeys(STATES, _removed)
_REFUSALS = {
    "retry": {
        MessageState.HELD: "release it instead (mq-queue release ID)",
        MessageState.SENDING: _SENDING_ORPHAN,
        MessageState.CORRUPT: _CORRUPT,
    },
    "hold": {MessageState.SENDING: _SENDING_ORPHAN, MessageState.CORRUPT: _CORRUPT},
    "release": {
        MessageState.QUEUED: "it is not held",
        MessageState.DEFERRED: "it is not held",
        MessageState.FAILED: "it is not held (retry sends it again)",
        MessageState.SENDING: _SENDING_ORPHAN,
        MessageState.CORRUPT: _CORRUPT,
    },
}


def _apply(
    queue: IMailQueue, queue_ids: Iterable[str], verb: str, actions: Mapping[MessageState, Action], level: int
) -> list[ChangeResult]:
    results = []
    for queue_id in check_ids(queue_ids):
        result = _act(queue, queue_id, actions, _REFUSALS.get(verb, {}))
        if result.done:
            log.log(level, "queue id %s: %s (mq-queue %s)", queue_id, result.text, verb)
            result = ChangeResult(queue_id, True, f"{queue_id}: {result.text}")
        results.append(result)
    return results


def retry(queue: IMailQueue, queue_ids: Iterable[str] = (), states: Iterable[MessageState] = ()) -> list[ChangeResult]:
    """Make messages due now: deferred -> queued; failed -> queued with every recipient not
    delivered reset to pending (so only they get it). ``states`` adds every message of
    those states (``failed``, ``deferred``)."""
    everything = [*queue_ids, *(entry.queue_id for state in states for entry in queue.entries(state))]
    return _apply(queue, everything, "retry", _RETRY, logging.INFO)


def hold(queue: IMailQueue, queue_ids: Iterable[str]) -> list[ChangeResult]:
    """Keep messages aside (queued, deferred or failed -> held): never sent until released."""
    return _apply(queue, queue_ids, "hold", _HOLD, logging.INFO)


def release(queue: IMailQueue, queue_ids: Iterable[str]) -> list[ChangeResult]:
    """Held -> queued (due at once), or -> failed when no recipient is left to try."""
    return _apply(queue, queue_ids, "release", _RELEASE, logging.INFO)


def discard(queue: IMailQueue, queue_ids: Iterable[str]) -> list[ChangeResult]:
    """Remove messages for good (any state; not one a sender holds), logging each at WARNING."""
    return _apply(queue, queue_ids, "discard", _DISCARD, logging.WARNING)
