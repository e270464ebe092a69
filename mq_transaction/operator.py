"""What an operator does to a queue: look at its messages, and retry, hold, release or discard them.

The library behind ``mq-queue``. Every message is named by its queue id, checked before
anything is read; every change is made on a message locked the way a sender locks it, so
a message a running ``mq-send`` is delivering is reported busy and left alone. Paths stay
the business of :mod:`mq_transaction.queue`.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from . import queuefile
from .delivery_log import logfmt_value, read_backwards
from .durations import format_duration, iso_utc, parse_iso_utc
from .errors import CorruptMessageError, UnknownQueueIdError
from .interfaces import IMailQueue
from .queue import is_queue_id, queued_time
from .queuefile import Envelope
from .records import Claim, Entry
from .states import STATES, WAITING, AttemptResult, MessageState, RecipientStatus

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


# -- ids --------------------------------------------------------------------------------


def check_ids(values: Iterable[str]) -> list[str]:
    """Return the ids without repeats, or raise :class:`UnknownQueueIdError` for the first
    value that is not a queue id (a path, ``..``, a dot-file...), before anything is touched."""
    checked: dict[str, None] = {}
    for value in values:
        # is_queue_id's "$" lets a trailing newline through: such a name is no queue id either.
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


# -- what can be known of a message ----------------------------------------------------


@dataclass
class MessageView:
    """One message as read from the queue; ``problem`` says why it could not be decoded."""

    entry: Entry
    envelope: Envelope | None
    message: bytes | None
    problem: str | None = None


def view(queue: IMailQueue, entry: Entry) -> MessageView | None:
    """Read a listed message without locking it; None when it left the queue meanwhile.

    A file that cannot be decoded gives what can be known: the envelope when its own
    part is intact (without the checksum's word for it), and the reason.
    """
    try:
        content = queue.read_raw(entry)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return MessageView(entry, None, None, f"cannot read it: {exc.strerror or exc}")
    try:
        envelope, message = queuefile.decode(content)
    except CorruptMessageError as exc:
        try:
            envelope = queuefile.decode_envelope_only(content)
        except CorruptMessageError:
            envelope = None
        return MessageView(entry, envelope, None, str(exc))
    return MessageView(entry, envelope, message)


def views(queue: IMailQueue, state: str | None = None) -> Iterator[MessageView]:
    """Every message in ``state`` (or in all states), oldest first within a state."""
    for entry in queue.entries(state):
        found = view(queue, entry)
        if found is not None:
            yield found


def header_block(message: bytes) -> bytes:
    """The message's header section, up to (not including) the first empty line."""
    match = re.search(rb"\r?\n\r?\n", message)
    return message if match is None else message[: match.start()]


def subject(message: bytes) -> str | None:
    """The decoded ``Subject`` header (RFC 2047 words decoded, folding undone), or None."""
    block = header_block(message)
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
        replies = attempt.get("recipients") if isinstance(attempt, dict) else None
        for address, reply in replies.items() if isinstance(replies, dict) else ():
            reply = str(reply)
            if not reply.startswith("2"):
                current = stored.get(address)
                return current if current and current.startswith(reply) else reply
    return envelope.failure_reason


def next_attempt(found: MessageView) -> float | None:
    """When a deferred message is tried again (its file's mtime); None in every other state."""
    return found.entry.mtime if found.entry.state == MessageState.DEFERRED else None


def summary(found: MessageView) -> dict:
    """One message as ``mq-queue list --json`` gives it (the keys of :data:`LIST_FIELDS`)."""
    envelope, entry = found.envelope, found.entry
    when = next_attempt(found)
    record = {
        "id": entry.queue_id,
        "state": entry.state,
        "queued_at": iso_utc(_queued_at(found)),
        "attempts": len(envelope.attempts) if envelope else None,
        "next_attempt": None if when is None else iso_utc(when),
        "sender": envelope.sender if envelope else None,
        "recipients": (
            [{"address": r.address, "status": r.status, "reply": r.reply} for r in envelope.recipients]
            if envelope
            else None
        ),
        "message_id": (envelope.message_id or None) if envelope else None,
        "subject": subject(found.message) if found.message is not None else None,
        "size": len(found.message) if found.message is not None else None,
        "last_error": f"corrupt: {found.problem}" if found.problem else last_error(envelope),  # type: ignore[arg-type]
    }
    return record


def list_messages(queue: IMailQueue, state: str | None = None) -> list[dict]:
    """Every message (of ``state``), as :func:`summary` records, by state then age."""
    return [summary(found) for found in views(queue, state)]


def list_given(queue: IMailQueue, queue_ids: Iterable[str]) -> list[dict]:
    """The :func:`summary` records of the given ids that name a message (to confirm a discard)."""
    records = []
    for queue_id in check_ids(queue_ids):
        try:
            found = view(queue, queue.find(queue_id))
        except UnknownQueueIdError:
            continue
        if found is not None:
            records.append(summary(found))
    return records


def details(queue: IMailQueue, queue_id: str) -> dict:
    """Everything ``mq-queue show`` prints: the summary, the attempts, the headers."""
    entry = find(queue, queue_id)
    found = view(queue, entry)
    if found is None:
        raise MessageNotFoundError(f"queue id {queue_id} left the queue while it was being read")
    record = summary(found)
    envelope = found.envelope
    record.update(
        file_size=entry.size,
        failure_reason=envelope.failure_reason if envelope else None,
        attempt_history=[a for a in envelope.attempts if isinstance(a, dict)] if envelope else [],
        headers=(
            header_block(found.message).decode("utf-8", "replace").splitlines() if found.message is not None else None
        ),
        problem=found.problem,
    )
    return record


def raw_message(queue: IMailQueue, queue_id: str) -> bytes:
    """The message exactly as it will be sent; for a file that cannot be decoded, the whole file."""
    entry = find(queue, queue_id)
    try:
        content = queue.read_raw(entry)
    except FileNotFoundError:
        raise MessageNotFoundError(f"queue id {queue_id} left the queue while it was being read") from None
    try:
        return queuefile.decode(content)[1]
    except CorruptMessageError:
        return content


# -- status -----------------------------------------------------------------------------


def queue_status(
    queue: IMailQueue,
    warn_age: float | None = None,
    delivery_log: str | None = None,
    log_format: str = "logfmt",
    now: float | None = None,
) -> dict:
    """Counts per state, the oldest waiting message, the last delivery and failure.

    The last delivery and failure come from the attempts recorded in the queue (a message
    partly delivered, or failed) and, when ``delivery_log`` is given, from that log (which
    also remembers the messages that left the queue); the newer wins. ``over_warn_age``
    counts waiting messages older than ``warn_age`` seconds.
    """
    now = time.time() if now is None else now
    counts = dict.fromkeys(STATES, 0)
    oldest: MessageView | None = None
    over = 0
    last_delivery: dict | None = None
    last_failure: dict | None = None
    for found in views(queue):
        entry = found.entry
        counts[entry.state] += 1
        if entry.state in WAITING:
            age = now - _queued_at(found)
            if oldest is None or entry.queue_id < oldest.entry.queue_id:
                oldest = found
            if warn_age is not None and age > warn_age:
                over += 1
        for attempt in found.envelope.attempts if found.envelope else ():
            if not isinstance(attempt, dict) or not isinstance(attempt.get("at"), str):
                continue
            replies = attempt.get("recipients")
            if isinstance(replies, dict) and any(str(reply).startswith("2") for reply in replies.values()):
                last_delivery = _newer(last_delivery, attempt["at"], entry.queue_id, "queue")
            if attempt.get("result") == AttemptResult.FAILED:
                last_failure = _newer(last_failure, attempt["at"], entry.queue_id, "queue")
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
    return {
        "counts": counts,
        "total": sum(counts.values()),
        "oldest": (
            None
            if oldest is None
            else {
                "id": oldest.entry.queue_id,
                "state": oldest.entry.state,
                "queued_at": iso_utc(_queued_at(oldest)),
                "age_seconds": round(max(0.0, now - _queued_at(oldest)), 3),
            }
        ),
        "last_delivery": last_delivery,
        "last_failure": last_failure,
        "warn_age_seconds": warn_age,
        "over_warn_age": over,
    }


def _queued_at(found: MessageView) -> float:
    return found.envelope.queued_at if found.envelope else queued_time(found.entry.queue_id)


def _newer(current: dict | None, at: object, queue_id: object, source: str) -> dict | None:
    if not isinstance(at, str):
        return current
    try:
        when = parse_iso_utc(at)
    except ValueError:
        return current
    if current is not None and parse_iso_utc(current["at"]) >= when:
        return current
    return {"at": iso_utc(when), "id": queue_id if isinstance(queue_id, str) else None, "source": source}


# -- changes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of one id: ``done`` False means it was left as it was, and ``text`` says why."""

    queue_id: str
    done: bool
    text: str


Action = Callable[[IMailQueue, Claim, Entry], str]


def _act(
    queue: IMailQueue, queue_id: str, actions: dict[MessageState, Action], refusals: dict[MessageState, str]
) -> Outcome:
    """Find and lock one message, then apply the action for its state, or refuse."""
    try:
        entry = queue.find(queue_id)
    except UnknownQueueIdError as exc:
        return Outcome(queue_id, False, str(exc))
    try:
        claim = queue.lock(entry)
    except OSError as exc:
        return Outcome(queue_id, False, str(exc))
    if claim is None:
        return Outcome(queue_id, False, _busy(queue, queue_id, entry.state))
    try:
        if entry.state not in actions:
            return Outcome(queue_id, False, f"queue id {queue_id} is {entry.state}: {refusals[entry.state]}")
        return Outcome(queue_id, True, actions[entry.state](queue, claim, entry))
    except CorruptMessageError as exc:
        return Outcome(queue_id, False, f"queue id {queue_id}: {exc}; only discard removes it")
    except OSError as exc:
        return Outcome(queue_id, False, f"queue id {queue_id}: {exc.strerror or exc}; it was left as it was")
    finally:
        claim.release()


def _decoded(claim: Claim) -> Envelope:
    """The locked message's envelope; a file that cannot be decoded is not moved around."""
    if claim.envelope is None:
        raise CorruptMessageError("it cannot be decoded (corrupt)")
    return claim.envelope


def _busy(queue: IMailQueue, queue_id: str, state: str) -> str:
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
    envelope = claim.envelope
    if envelope is None:
        try:
            envelope = queuefile.decode_envelope_only(queue.read_raw(entry))
        except (CorruptMessageError, OSError):
            envelope = None
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


def _apply(queue: IMailQueue, queue_ids: Iterable[str], verb: str, actions: dict, level: int) -> list[Outcome]:
    outcomes = []
    for queue_id in check_ids(queue_ids):
        outcome = _act(queue, queue_id, actions, _REFUSALS.get(verb, {}))
        if outcome.done:
            log.log(level, "queue id %s: %s (mq-queue %s)", queue_id, outcome.text, verb)
            outcome = Outcome(queue_id, True, f"{queue_id}: {outcome.text}")
        outcomes.append(outcome)
    return outcomes


def retry(queue: IMailQueue, queue_ids: Iterable[str] = (), states: Iterable[str] = ()) -> list[Outcome]:
    """Make messages due now: deferred -> queued; failed -> queued with every recipient not
    delivered reset to pending (so only they get it). ``states`` adds every message of
    those states (``failed``, ``deferred``)."""
    everything = [*queue_ids, *(entry.queue_id for state in states for entry in queue.entries(state))]
    return _apply(queue, everything, "retry", _RETRY, logging.INFO)


def hold(queue: IMailQueue, queue_ids: Iterable[str]) -> list[Outcome]:
    """Keep messages aside (queued, deferred or failed -> held): never sent until released."""
    return _apply(queue, queue_ids, "hold", _HOLD, logging.INFO)


def release(queue: IMailQueue, queue_ids: Iterable[str]) -> list[Outcome]:
    """Held -> queued (due at once), or -> failed when no recipient is left to try."""
    return _apply(queue, queue_ids, "release", _RELEASE, logging.INFO)


def discard(queue: IMailQueue, queue_ids: Iterable[str]) -> list[Outcome]:
    """Remove messages for good (any state; not one a sender holds), logging each at WARNING."""
    return _apply(queue, queue_ids, "discard", _DISCARD, logging.WARNING)


# -- text output ------------------------------------------------------------------------


def format_list_lines(records: list[dict]) -> str:
    """One plain line per message (for pipes and scripts): id, state, then ``key=value`` pairs."""
    lines = []
    for r in records:
        recipients = None
        if r["recipients"] is not None:
            recipients = ",".join(f"{x['address']}:{x['status']}" for x in r["recipients"])
        pairs = {
            "queued_at": r["queued_at"],
            "attempts": r["attempts"],
            "next_attempt": r["next_attempt"],
            "size": r["size"],
            "sender": r["sender"],
            "recipients": recipients,
            "message_id": r["message_id"],
            "subject": r["subject"],
            "last_error": r["last_error"],
        }
        values = (logfmt_value("-" if v is None else str(v)) for v in pairs.values())
        lines.append(" ".join([r["id"], r["state"], *(f"{k}={v}" for k, v in zip(pairs, values, strict=True))]))
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]], width: int) -> str:
    """Columns padded to their widest cell; each line cut to the terminal's width."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(size) for cell, size in zip(row, widths, strict=True)).rstrip()
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    return "\n".join(lines)


def _cut(text: str | None, size: int) -> str:
    text = "-" if text is None else " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


def format_list_table(records: list[dict], now: float | None = None, width: int | None = None) -> str:
    """A table for a person at a terminal: age, schedule, first recipient, subject, last error."""
    now = time.time() if now is None else now
    width = width or shutil.get_terminal_size().columns
    if not records:
        return "no message"
    rows = []
    for r in records:
        recipients = r["recipients"]
        to = (
            "-" if not recipients else recipients[0]["address"] + (f" +{len(recipients) - 1}" if recipients[1:] else "")
        )
        next_at = "-"
        if r["next_attempt"]:
            wait = parse_iso_utc(r["next_attempt"]) - now
            next_at = f"in {format_duration(wait)}" if wait > 0 else "due"
        rows.append(
            [
                r["id"],
                r["state"],
                format_duration(now - parse_iso_utc(r["queued_at"])),
                "-" if r["attempts"] is None else str(r["attempts"]),
                next_at,
                _cut(to, 32),
                _cut(r["subject"], 30),
                _cut(r["last_error"], 40),
            ]
        )
    return _table(["ID", "STATE", "AGE", "TRIES", "NEXT", "TO", "SUBJECT", "LAST ERROR"], rows, width)


def _when(event: dict | None, unknown: str) -> str:
    if event is None:
        return unknown
    where = "the delivery log" if event["source"] == "delivery_log" else "the queue"
    return f"{event['at']} (queue id {event['id'] or 'unknown'}, from {where})"


def format_status(report: dict, tty: bool = False) -> str:
    """``status`` as text: a table at a terminal, else ``name value`` lines (easy to grep)."""
    oldest = report["oldest"]
    warn = report["warn_age_seconds"]
    if not tty:
        lines = [f"{state} {count}" for state, count in report["counts"].items()]
        lines += [
            f"total {report['total']}",
            f"oldest_id {oldest['id'] if oldest else '-'}",
            f"oldest_age_seconds {oldest['age_seconds'] if oldest else 0}",
            f"last_delivery {report['last_delivery']['at'] if report['last_delivery'] else 'unknown'}",
            f"last_failure {report['last_failure']['at'] if report['last_failure'] else 'none'}",
        ]
        if warn is not None:
            lines.append(f"over_warn_age {report['over_warn_age']}")
        return "\n".join(lines)
    rows = [[state, str(count)] for state, count in report["counts"].items()]
    lines = [_table(["STATE", "MESSAGES"], [*rows, ["total", str(report["total"])]], 80), ""]
    if oldest:
        lines.append(
            f"oldest message  {oldest['id']} ({oldest['state']}, queued {format_duration(oldest['age_seconds'])} ago)"
        )
    else:
        lines.append("oldest message  none waiting")
    lines.append(f"last delivery   {_when(report['last_delivery'], 'unknown')}")
    lines.append(f"last failure    {_when(report['last_failure'], 'none on record')}")
    if warn is not None:
        lines.append(f"older than {format_duration(warn)}  {report['over_warn_age']} waiting message(s)")
    return "\n".join(lines)


def format_details(record: dict) -> str:
    """``show`` as text: the envelope, the attempt history, then the message headers."""
    size = "unknown"
    if record["size"] is not None:
        size = f"{record['size']} bytes"
    fields = [
        ("queue id", record["id"]),
        ("state", record["state"]),
        ("queued at", record["queued_at"]),
        ("sender", record["sender"]),
        ("message id", record["message_id"]),
        ("subject", record["subject"]),
        ("size", f"{size} (queue file {record['file_size']} bytes)"),
        ("next attempt", record["next_attempt"]),
        ("failure", record["failure_reason"]),
        ("last error", record["last_error"]),
    ]
    lines = [f"{name + ':':<14}{'-' if value is None else value}" for name, value in fields]
    if record["problem"]:
        lines.append(f"{'':<14}(show --raw prints the whole file)")
    lines.append("recipients:")
    recipients = record["recipients"] or []
    width = max((len(r["address"]) for r in recipients), default=0)
    for r in recipients:
        lines.append(f"  {r['address']:<{width}}  {r['status']:<9}  {r['reply'] or '-'}")
    if record["recipients"] is None:
        lines.append("  unknown")
    lines.append("attempts:")
    for attempt in record["attempt_history"]:
        nxt = f", next attempt {attempt['next_attempt']}" if attempt.get("next_attempt") else ""
        lines.append(
            f"  {attempt.get('number', '?')}. {attempt.get('at', '?')} {attempt.get('server', '?')}: "
            f"{attempt.get('result', '?')}{nxt}"
        )
        replies = attempt.get("recipients")
        for address, reply in replies.items() if isinstance(replies, dict) else ():
            lines.append(f"       {address}: {reply}")
    if not record["attempt_history"]:
        lines.append("  none yet")
    lines.append("headers:")
    lines += [f"  {line}" for line in record["headers"] or ["unknown"]]
    return "\n".join(lines)
