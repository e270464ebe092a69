"""One delivery run over the queue: the engine behind ``mq-send`` (and its daemon).

Usage in-process::

    from mq_transaction.sender import Sender
    result = Sender(settings).run()          # settings: mq_transaction.settings.Settings
    result.exit_status                       # 0, 1 or 75, as mq-send exits
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .database_opening import open_database_queue
from .delivery_log import DeliveryLog
from .durations import iso_utc
from .errors import ConfigurationError, QueueFullError, QueueNotFoundError, QueueUnavailableError
from .exit_status import SendExit
from .hooks import DeliveryEvent, Hooks, RecipientResult
from .interfaces import IMailQueue
from .policy import RetryPolicy, attempts_made, expiry_note, settle
from .queue import MessageQueue
from .queuefile import Attempt
from .records import Claim
from .replies import AUTH_REQUIRED, Reply, is_relay_refusal, reply_class
from .settings import Settings
from .smtp import ConnectionLost, DialogSMTP, ServerError, TransactionReplies, close_session, open_session
from .smtp_config import ServerConfig
from .states import AttemptResult, MessageState, RecipientStatus

log = logging.getLogger("mq_transaction.sender")


@dataclass
class RunResult:
    """What a run did; ``exit_status`` is mq-send's exit status."""

    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    corrupt: int = 0
    #: recipients refused for good (a 5xx) in this run, whatever became of their message
    refused: int = 0
    attempts: int = 0
    connections: int = 0
    recovered: int = 0
    server_error: str | None = None
    #: Why a message could not be tried or recorded because of the queue itself (a full
    #: disk, EMFILE, EIO): it stays queued, and the run exits 75.
    queue_error: str | None = None
    #: when the first server-level failure and the first recorded attempt happened (clock time)
    server_failed_at: float | None = None
    first_attempt_at: float | None = None
    connection_errors: int = 0
    #: (recipient outcome, reply class) -> count, e.g. ("failed", "5xx"): for metrics
    outcomes: collections.Counter = field(default_factory=collections.Counter)

    def merge(self, other: RunResult) -> None:
        """Add another run's counts to this one (parallel sessions)."""
        for name in ("delivered", "deferred", "failed", "corrupt", "refused", "attempts", "connections", "recovered"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.connection_errors += other.connection_errors
        self.outcomes.update(other.outcomes)
        self.server_error = self.server_error or other.server_error
        self.queue_error = self.queue_error or other.queue_error
        self.server_failed_at = _earliest(self.server_failed_at, other.server_failed_at)
        self.first_attempt_at = _earliest(self.first_attempt_at, other.first_attempt_at)

    @property
    def exit_status(self) -> SendExit:
        """1 if a recipient was refused for good, or a message failed or was corrupt; else
        75 if a message was deferred or the server could not be used; else 0."""
        if self.failed or self.corrupt or self.refused:
            return SendExit.FAILED
        if self.deferred or self.server_error or self.queue_error:
            return SendExit.TEMPFAIL
        return SendExit.OK


#: An attempt record keeps at most this many recipients' replies (``more_recipients`` counts
#: the others), and the envelope the last this many attempts: the record of a message to
#: 10,000 recipients deferred for days stays small. Every recipient's last reply is kept.
REPLIES_KEPT, ATTEMPTS_KEPT = 100, 10


def _earliest(first: float | None, second: float | None) -> float | None:
    return second if first is None else first if second is None else min(first, second)


def server_config(settings: Settings) -> ServerConfig:
    """The SMTP server settings as the client needs them (reads the password file)."""
    return ServerConfig(
        host=settings.smtp_host,
        port=settings.effective_port,
        tls=settings.effective_tls,
        timeout=settings.smtp_timeout,
        data_timeout=settings.smtp_data_timeout,
        tls_verify=settings.smtp_tls_verify,
        ca_file=settings.smtp_ca_file,
        username=settings.smtp_username,
        password=settings.read_password(),
        helo=settings.smtp_helo,
        log_bodies=settings.smtp_log_bodies,
    )


def open_queue(settings: Settings, *, wait: bool = False) -> Any:
    """The queue named by ``mq.queue_url`` (its tables checked), or by ``mq.queue_dir``,
    which must exist (ConfigurationError if not).

    ``wait`` (the daemon): a database that cannot be reached yet is no error; its tables
    are checked once it can be (see :func:`~mq_transaction.database_opening.open_database_queue`).
    """
    if settings.queue_url:
        return open_database_queue(settings, wait=wait)
    if not settings.queue_dir:
        raise ConfigurationError("mq.queue_dir", "missing: set it to the queue directory")
    try:
        return MessageQueue(settings.queue_dir, create=False, group_access=settings.group_access, fsync=settings.fsync)
    except QueueNotFoundError as exc:
        raise ConfigurationError("mq.queue_dir", str(exc)) from None


class Sender:
    """Delivers due messages over reused SMTP sessions: one, or more for a backlog.

    ``hooks`` adds Python callables to those named by ``mq.on_*``. ``delivery_log`` is
    an open :class:`DeliveryLog` (default: ``mq.delivery_log`` when set).
    """

    #: A backlog opens one session per this many messages, up to ``mq.smtp_connections``.
    MESSAGES_PER_SESSION = 10
    #: After the server refused an additional session, use fewer for this long (seconds).
    FEWER_SESSIONS_FOR = 600.0

    def __init__(
        self,
        settings: Settings,
        *,
        hooks: Hooks | None = None,
        queue: IMailQueue | None = None,
        delivery_log: DeliveryLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.queue = queue or open_queue(settings)
        self.server = server_config(settings)
        self.policy = RetryPolicy.from_settings(settings)
        self.hooks = Hooks.from_settings(settings)
        if hooks is not None:
            for kind, registered in hooks._hooks.items():
                for hook in registered:
                    self.hooks.add(kind, hook)
        self.delivery_log = delivery_log
        if delivery_log is None and settings.delivery_log:
            self.delivery_log = DeliveryLog(settings.delivery_log, settings.delivery_log_format)
        self.clock = clock
        self.session: DialogSMTP | None = None
        self._session_messages = 0
        #: the next message, claimed early so that its transaction could begin in the write
        #: that ends the current one's body (see :meth:`_look_ahead`)
        self._lookahead: Claim | None = None
        #: Messages claimed in one batch with the current one (``IMailQueue.claim_batch_size``),
        #: not tried yet: tried next by this session, or given back when it stops.
        self._claimed: collections.deque[Claim] = collections.deque()
        #: True once the server accepted a recipient from us (reset by a server-level failure)
        self._relays_for_us = False
        self._relay_suspects: list[tuple[str, ServerError]] = []
        self._is_helper = False  # an additional session of a parallel delivery
        self._backed_off = False
        self._session_limit = settings.smtp_connections
        self._fewer_sessions_until = 0.0
        self.progress: Callable[[int, int], None] | None = None
        #: The daemon lowers this and logs outages once per state change instead.
        self.server_error_level = logging.ERROR
        self.last_activity = clock()

    # -- a whole run ---------------------------------------------------------------------

    def run(
        self, flush: bool = False, max_messages: int | None = None, should_stop: Callable[[], bool] | None = None
    ) -> RunResult:
        """Clean ``tmp/``, recover dead claims, deliver everything due; then QUIT.

        Once ``should_stop()`` is true (``mq-send`` got SIGTERM), each session finishes the
        message in flight and gives back those it claimed ahead.
        """
        result = RunResult()
        try:
            self.housekeeping(result)
            self.deliver(self.queue.due(self.clock(), flush=flush), result, max_messages, should_stop)
        except QueueUnavailableError as exc:  # a database queue away: nothing lost, try again later
            log.error("%s; the run stops, every message stays queued", exc)
            result.queue_error = str(exc)
        finally:
            self.close()
        return result

    def sessions_for(self, backlog: int) -> int:
        """How many SMTP sessions a backlog of ``backlog`` messages deserves.

        One per ``MESSAGES_PER_SESSION`` messages, up to ``mq.smtp_connections`` (lowered for
        a while after the server refused an additional session): a message or two committed
        now and then goes over one session; a backlog opens more.
        """
        limit = self.settings.smtp_connections
        if self._fewer_sessions_until > self.clock():
            limit = min(limit, self._session_limit)
        return max(1, min(limit, -(-backlog // self.MESSAGES_PER_SESSION)))

    def _deliver_in_parallel(
        self, pending: collections.deque[str], count: int, result: RunResult, should_stop: Callable[[], bool] | None
    ) -> None:
        """Share ``pending`` among ``count`` sessions, each in its own thread.

        The first session is opened before the others, so that a server that refuses an
        additional session (``421`` too many connections) is known to be up: that session
        gives its message back and ends, and the others carry on (:meth:`_back_off`).
        """
        try:
            self._session(result)
        except ServerError:
            count = 1  # the server is down: the serial loop meets the failure and reports it
        helpers = [self._helper() for _ in range(count - 1)]
        results = [RunResult() for _ in helpers]
        threads = [
            threading.Thread(target=helper._work_then_close, args=(pending, partial, should_stop), name=f"mq-send-{n}")
            for n, (helper, partial) in enumerate(zip(helpers, results, strict=True), 2)
        ]
        for thread in threads:
            thread.start()
        try:
            self._work(pending, result, None, should_stop)
        finally:
            for thread in threads:
                thread.join()
            for helper, partial in zip(helpers, results, strict=True):
                helper.close()  # (closed by its thread already, unless that thread died)
                result.merge(partial)
        refused = sum(1 for helper in helpers if helper._backed_off)
        if refused:
            self._session_limit = count - refused
            self._fewer_sessions_until = self.clock() + self.FEWER_SESSIONS_FOR
            log.warning(
                "SMTP server %s:%d refused %d additional session(s); using at most %d for the next %.0f minutes",
                self.server.host,
                self.server.port,
                refused,
                self._session_limit,
                self.FEWER_SESSIONS_FOR / 60,
            )

    def _work_then_close(
        self, pending: collections.deque[str], result: RunResult, should_stop: Callable[[], bool] | None
    ) -> None:
        """An additional session's thread: its share of ``pending``, then its QUIT (each session's in parallel)."""
        try:
            self._work(pending, result, None, should_stop)
        finally:
            self.close()

    def _helper(self) -> Sender:
        helper = Sender(self.settings, queue=self.queue, delivery_log=self.delivery_log, clock=self.clock)
        helper.hooks = self.hooks
        helper.server_error_level = self.server_error_level
        helper._is_helper = True
        return helper

    def housekeeping(self, result: RunResult) -> None:
        """Remove stale ``tmp/`` files and give dead senders' claims back to the queue."""
        self.queue.cleanup(self.settings.tmp_max_age, self.clock())
        result.recovered += len(self.queue.recover_stale_claims())

    def close(self) -> None:
        """QUIT the SMTP session, if one is open (additional sessions end with their delivery)."""
        close_session(self.session)
        self.session = None

    def deliver(
        self,
        queue_ids: list[str],
        result: RunResult,
        max_messages: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RunResult:
        """Try each message in ``queue_ids`` (oldest first); stop at a server-level failure.

        A backlog is shared among up to ``mq.smtp_connections`` sessions (:meth:`sessions_for`),
        each in its own thread; the per-message claims keep them apart.
        """
        if max_messages is not None:
            queue_ids = queue_ids[:max_messages]
        pending = collections.deque(queue_ids)
        count = self.sessions_for(len(queue_ids))
        if count > 1:
            self._deliver_in_parallel(pending, count, result, should_stop)
        else:
            self._work(pending, result, len(queue_ids), should_stop)
        return result

    def _work(
        self,
        pending: collections.deque[str],
        result: RunResult,
        total: int | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """Take messages from ``pending`` (shared with other sessions) until it is empty or
        the server cannot be used."""
        total = total or len(pending)
        self._relay_suspects = []
        try:
            while True:
                if should_stop is not None and should_stop():
                    break
                if self.progress:
                    self.progress(total - len(pending) - len(self._claimed), total)
                claim, self._lookahead = self._lookahead, None
                if claim is None:
                    try:
                        claim = self._claim_next(pending, result)
                    except QueueUnavailableError as exc:
                        result.queue_error = str(exc)
                        log.error("%s; this run stops, every message stays queued", exc)
                        break
                if claim is None:
                    if self._relay_suspects:
                        self._relay_refused(result, self._relay_suspects[0][1])
                    break
                try:
                    if not self._attempt(claim, result, pending, should_stop):
                        break
                except Exception as exc:  # noqa: BLE001 - never lose the claim to a surprise
                    self._unexpected(claim, result, exc)
                    break
                if self._relays_for_us and self._relay_suspects:
                    # The server relays for us after all: the suspects' refusals were about
                    # their recipients; try them again, now judged like any other reply.
                    pending.extendleft(reversed([queue_id for queue_id, _error in self._relay_suspects]))
                    self._relay_suspects = []
        finally:
            self._give_back_lookahead()
            self._give_back_claimed(pending)
        self._relay_suspects = []
        if self.progress:
            self.progress(total, total)

    def _claim_next(self, pending: collections.deque[str], result: RunResult) -> Claim | None:
        """Claim the next message of ``pending`` that no other sender has; None when there is none left.

        Messages are claimed ``queue.claim_batch_size`` at a time (one statement for ten, on a
        database queue), the others kept for the next calls. A corrupt file or a full disk
        concerns one message: counted, logged, and the next one is taken.
        :class:`QueueUnavailableError` (the queue itself is away) is raised, with the batch
        given back to ``pending``.
        """
        while not self._claimed:
            size = min(len(pending), self.queue.claim_batch_size)
            if not size:
                return None
            batch = [pending.popleft() for _ in range(size)]
            try:
                claims, problems = self.queue.claim_many(batch)
            except QueueUnavailableError:
                pending.extendleft(reversed(batch))
                raise
            for problem in problems:
                if isinstance(problem, QueueFullError):  # others (one recipient each) may need no room
                    result.queue_error = str(problem)
                else:
                    result.corrupt += 1
                log.error("%s; the run goes on with the other messages", problem)
            self._claimed.extend(claims)  # (none at all: other senders have them)
        return self._claimed.popleft()

    def _give_back_claimed(self, pending: collections.deque[str]) -> None:
        """The session stops with messages of its last batch not tried: back to the queue at
        once (a database queue's would otherwise wait for their leases to run out), and their
        ids back to ``pending`` for the run's other sessions."""
        while self._claimed:
            claim = self._claimed.pop()
            try:
                self.queue.unclaim(claim)
            except OSError as exc:
                claim.release()  # left in sending: the next run gives it back
                log.warning("queue id %s: cannot give it back now (%s); the next run does", claim.queue_id, exc)
                continue
            pending.appendleft(claim.queue_id)

    def _look_ahead(
        self, pending: collections.deque[str], result: RunResult, should_stop: Callable[[], bool] | None
    ) -> tuple[str, list[str], bytes] | None:
        """The next message of this session, claimed now: its envelope and bytes, or None.

        The SMTP session calls this when the current message's body is about to go, to begin
        the next transaction in the same write (one round trip a message instead of two).
        The claim comes first, so no other sender can have that message; it is tried next
        (:meth:`_work`), on this session or, if this one ends, on a new one, or given back.
        """
        if self._lookahead is None:
            if self._session_messages + 1 >= self.settings.max_per_connection:
                return None  # the next message goes over a new session
            if should_stop is not None and should_stop():
                return None
            try:
                self._lookahead = self._claim_next(pending, result)
            except QueueUnavailableError:
                return None  # the loop meets it again, and stops there
            if self._lookahead is None:
                return None
        envelope = self._lookahead.envelope
        targets = [r.address for r in envelope.undelivered()]
        return (envelope.sender, targets, self._lookahead.message) if targets else None

    def _give_back_lookahead(self) -> None:
        """The run stops with a message claimed ahead: end its begun transaction, and unclaim it."""
        claim, self._lookahead = self._lookahead, None
        if claim is None:
            return
        if self.session is not None and self.session.begun is not None:
            self.close()  # without QUIT: the only way to end a begun transaction undelivered
        try:
            self.queue.unclaim(claim)
        except OSError:
            claim.release()  # left in sending/: the next run recovers it

    # -- one message ---------------------------------------------------------------------

    def _session(self, result: RunResult) -> DialogSMTP:
        if self.session is not None and self._session_messages >= self.settings.max_per_connection:
            self.close()
        if self.session is None:
            self.session = open_session(self.server)
            self._session_messages = 0
            result.connections += 1
        return self.session

    def _attempt(
        self,
        claim: Claim,
        result: RunResult,
        pending: collections.deque[str],
        should_stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Try one claimed message; return False when this session cannot go on."""
        envelope = claim.envelope
        targets = [r.address for r in envelope.undelivered()]
        retried = False
        while targets:  # a message with no one left to try is only settled, never sent
            opening = self.session is None
            try:
                session = self._session(result)
                outcome = session.send_message_bytes(
                    envelope.sender, targets, claim.message, lambda: self._look_ahead(pending, result, should_stop)
                )
                self._session_messages += 1
                break
            except ConnectionLost as exc:
                worked = self._session_messages > 0
                self.close()
                if exc.after_data:
                    outcome = exc.outcome or TransactionReplies()  # always set after the data
                    log.warning(
                        "queue id %s (Message-ID %s): %s; the server may have accepted it, "
                        "so the message may be delivered twice",
                        claim.queue_id,
                        envelope.message_id,
                        exc,
                    )
                    break
                if worked and not retried:
                    retried = True
                    log.info("%s: %s; reconnecting once", self.server.host, exc)
                    continue
                return self._server_failed(claim, result, exc)
            except ServerError as exc:
                self.close()
                if opening and self._is_helper:
                    return self._back_off(claim, pending, exc)
                return self._server_failed(claim, result, exc)
        else:
            outcome = TransactionReplies()
        replies = list(outcome.rcpt_replies.values())
        if any(reply.code < 300 for reply in replies):
            self._relays_for_us = True
        elif is_relay_refusal(replies, authenticated=bool(self.server.username)) and (
            not self._relays_for_us or any(reply.code == AUTH_REQUIRED for reply in replies)
        ):
            return self._relay_refusal(claim, result, replies)
        self._record(claim, targets, outcome, result)
        self.last_activity = self.clock()
        return True

    def _relay_refusal(self, claim: Claim, result: RunResult, replies: list[Reply]) -> bool:
        """The server refused every recipient as it refuses to relay: keep the message.

        A ``530`` says so plainly: a server-level failure. A ``5.7.x`` refusal may still be
        about these recipients, so the message waits aside while the next one is tried: if
        the server accepts someone, it relays for us and the message is tried again; if it
        refuses the next message the same way (or nothing else is due), the run stops.
        """
        self.queue.unclaim(claim)
        reply = next((r for r in replies if r.code == AUTH_REQUIRED), replies[0])
        error = ServerError(
            "the server refuses to relay for us (every recipient refused"
            f"{', not authenticated' if not self.server.username else ''}); "
            "check mq.smtp_username and mq.smtp_password_file, and mq.smtp_tls "
            "(many servers offer AUTH only over TLS)",
            reply,
        )
        if reply.code == AUTH_REQUIRED or self._relay_suspects:
            self._relay_suspects = []
            return self._relay_refused(result, error)
        self._relay_suspects.append((claim.queue_id, error))
        return True

    def _relay_refused(self, result: RunResult, error: ServerError) -> bool:
        self.close()
        return self._server_failed(None, result, error)

    def _back_off(self, claim: Claim, pending: collections.deque[str], exc: ServerError) -> bool:
        """An additional session was refused (``421`` too many connections, most often)
        while the first one works: give the message back to the others and end quietly."""
        self.queue.unclaim(claim)
        pending.appendleft(claim.queue_id)
        self._backed_off = True
        log.info("SMTP server %s:%d refused an additional session: %s", self.server.host, self.server.port, exc)
        return False

    def _unexpected(self, claim: Claim, result: RunResult, exc: Exception) -> None:
        """An error nobody planned for: keep the message queued and stop this run."""
        log.exception(
            "queue id %s (Message-ID %s): unexpected error; the message stays queued and this run stops",
            claim.queue_id,
            claim.envelope.message_id,
        )
        self.close()
        result.server_error = f"unexpected error: {exc!r}"
        try:
            self.queue.unclaim(claim)
        except OSError:
            claim.release()  # left in sending/: the next run recovers it

    def _server_failed(self, claim: Claim | None, result: RunResult, exc: ServerError) -> bool:
        if claim is not None:
            self.queue.unclaim(claim)
        self._relays_for_us = False
        result.server_error = str(exc)
        result.connection_errors += 1
        if result.server_failed_at is None:
            result.server_failed_at = self.clock()
        log.log(
            self.server_error_level,
            "SMTP server %s:%d cannot be used: %s; every message stays queued for the next run",
            self.server.host,
            self.server.port,
            exc,
        )
        return False

    def _record(self, claim: Claim, targets: list[str], outcome: TransactionReplies, result: RunResult) -> None:
        """Store each recipient's fate durably (first), then log and call the hooks."""
        envelope = claim.envelope
        now = self.clock()
        result.attempts += 1
        if result.first_attempt_at is None:
            result.first_attempt_at = now
        for recipient in envelope.recipients:
            if recipient.address in outcome.replies:
                reply = outcome.replies[recipient.address]
                recipient.status = outcome.status(recipient.address)
                recipient.reply = str(reply)
                result.outcomes[recipient.status, reply_class(reply.code)] += 1
                if recipient.status == RecipientStatus.FAILED:
                    result.refused += 1
        attempt = attempts_made(envelope.attempts) + 1
        settlement = settle((r.status for r in envelope.recipients), envelope.queued_at, now, self.policy)
        if settlement.expired:
            age = now - envelope.queued_at
            for recipient in envelope.undelivered():
                recipient.status = RecipientStatus.FAILED
                recipient.reply = expiry_note(recipient.reply, age)
        state, reason, next_attempt = settlement.state, settlement.reason, settlement.next_attempt
        envelope.failure_reason = reason
        replies = [(address, str(outcome.replies[address])) for address in targets if address in outcome.replies]
        envelope.attempts.append(
            Attempt(
                number=attempt,
                at=now,
                server=f"{self.server.host}:{self.server.port}",
                replies=dict(replies[:REPLIES_KEPT]),
                result=state,
                next_attempt=next_attempt,
                more_recipients=max(0, len(replies) - REPLIES_KEPT),
            )
        )
        # Bounded: each recipient's last reply is in the envelope; the history keeps the last few.
        del envelope.attempts[:-ATTEMPTS_KEPT]
        # The new state is made durable before anything else (the duplicate window).
        try:
            if state == AttemptResult.DELIVERED:
                self.queue.finish_delivered(claim)
                result.delivered += 1
            elif state == AttemptResult.DEFERRED:
                assert next_attempt is not None  # set with DEFERRED above
                self.queue.finish_deferred(claim, next_attempt)
                result.deferred += 1
            else:
                self.queue.finish_failed(claim)
                result.failed += 1
        except OSError as exc:
            self._keep_unrecorded(claim, set(targets), result, exc)
        tried = set(targets)  # a set: 50,000 recipients must not cost 50,000 list scans each
        event = DeliveryEvent(
            state=state,
            queue_id=claim.queue_id,
            message_id=envelope.message_id,
            sender=envelope.sender,
            recipients=tuple(
                RecipientResult(r.address, r.status, r.reply, r.address in tried) for r in envelope.recipients
            ),
            attempt=attempt,
            queued_at=envelope.queued_at,
            next_attempt=next_attempt,
            reason=reason,
        )
        self._report(event, now)
        self.hooks.call(event)

    def _keep_unrecorded(self, claim: Claim, tried: set[str], result: RunResult, exc: OSError) -> None:
        """The outcome could not be written. A recipient delivered in this attempt must never
        be sent it again, so such a message is held, not given back with its old envelope;
        one that reached nobody now goes back to the queue unchanged."""
        result.queue_error = f"queue id {claim.queue_id}: cannot record its outcome: {exc}"
        reached_now = [
            r.address for r in claim.envelope.recipients if r.address in tried and r.status == RecipientStatus.DELIVERED
        ]
        try:
            if reached_now:
                self.queue.move(claim, MessageState.SENDING, MessageState.HELD)
            else:
                self.queue.unclaim(claim)
        except OSError as move_error:
            claim.release()
            log.critical(
                "queue id %s (Message-ID %s): cannot record the outcome of this attempt (%s) nor move it (%s); "
                "it stays in sending/ and the next run gives it back to the queue. It has reached: %s",
                claim.queue_id,
                claim.envelope.message_id,
                exc,
                move_error,
                ", ".join(reached_now) or "nobody in this attempt",
            )
            return
        if reached_now:
            log.critical(
                "queue id %s (Message-ID %s): cannot record the outcome of this attempt: %s; moved to hold so that "
                "nobody is sent it twice. It has reached: %s. Free space, check it with mq-queue show, and release "
                "it only with those recipients in mind (the queue file still lists them as not delivered)",
                claim.queue_id,
                claim.envelope.message_id,
                exc,
                ", ".join(reached_now),
            )
        else:
            log.error(
                "queue id %s (Message-ID %s): cannot record the outcome of this attempt: %s; it reached nobody, "
                "so it stays queued unchanged",
                claim.queue_id,
                claim.envelope.message_id,
                exc,
            )

    def _report(self, event: DeliveryEvent, now: float) -> None:
        if self.delivery_log is not None:
            try:
                self.delivery_log.write(event, now)
            except OSError as exc:  # the delivery itself is recorded in the queue: go on, and say so
                log.error(
                    "queue id %s (Message-ID %s): cannot write the delivery log: %s; this line is lost",
                    event.queue_id,
                    event.message_id,
                    exc.strerror or exc,
                )
        summary = "; ".join(f"{r.address}: {r.status} ({r.reply})" for r in event.recipients if r.tried)
        where = {
            AttemptResult.DELIVERED: "delivered, removed from the queue",
            AttemptResult.DEFERRED: f"deferred, next attempt at {iso_utc(event.next_attempt or now)}",
            AttemptResult.FAILED: f"moved to failed ({event.reason})",
        }[AttemptResult(event.state)]
        level = {
            AttemptResult.DELIVERED: logging.INFO,
            AttemptResult.DEFERRED: logging.WARNING,
            AttemptResult.FAILED: logging.ERROR,
        }[AttemptResult(event.state)]
        if any(r.tried and r.status == RecipientStatus.FAILED for r in event.recipients):
            level = logging.ERROR  # a refusal is reported now, not when the message finally fails
        log.log(
            level,
            "queue id %s (Message-ID %s) attempt %d: %s; %s",
            event.queue_id,
            event.message_id,
            event.attempt,
            summary,
            where,
        )
