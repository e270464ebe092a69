"""The sender against a real SMTP server on 127.0.0.1: per-recipient fate, retries, failures.

Every test runs on both queues (``queue_backend``: the directory queue, the database queue).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time

import pytest
import transaction
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from queue_backends import queue_settings, slow_on_database
from smtp_sinks import PASSWORD, USERNAME, RecordingHandler, free_port

from mq_transaction import QueuedMailer
from mq_transaction.hooks import Hooks
from mq_transaction.sender import Sender
from mq_transaction.settings import parse_settings
from mq_transaction.states import MessageState

SENDER = "app@example.com"


def make_settings(queue, port, **extra):
    raw = {**queue_settings(queue), "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(port)}
    raw.update({f"mq.{key}": str(value) for key, value in extra.items()})
    return parse_settings(raw)


def queue_messages(queue, count=1, to=("ann@example.org",), body=b"Hello\n"):
    """Commit ``count`` messages; return their queue ids."""
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    ids = []
    for number in range(count):
        with mailer.transaction_manager:
            message = f"From: {SENDER}\nTo: {', '.join(to)}\nSubject: message {number}\n\n".encode() + body
            ids.append(mailer.send(message))
    return ids


def states(queue):
    """How many messages each state holds."""
    counts = {}
    for entry in queue.entries():
        counts[entry.state] = counts.get(entry.state, 0) + 1
    return counts


@pytest.fixture
def queue(queue_backend):
    """Every test here runs on the directory queue and on the database queue."""
    return queue_backend.queue


def test_delivers_every_message_over_one_reused_connection(queue, smtp_sink):
    queue_messages(queue, 5)
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.exit_status == 0
    assert result.delivered == 5
    assert len(smtp_sink.received) == 5
    assert smtp_sink.handler.sessions == 1
    assert result.connections == 1
    assert states(queue) == {}


def test_messages_per_connection_cap_opens_a_new_session(queue, smtp_sink):
    queue_messages(queue, 5)
    result = Sender(make_settings(queue, smtp_sink.port, max_per_connection=2)).run()
    assert result.delivered == 5
    assert smtp_sink.handler.sessions == 3


def test_server_receives_exact_bytes_crlf_normalised_and_dot_stuffing_undone(queue, smtp_sink):
    body = b".leading dot\n..two dots\nbare LF\r\nCRLF line\n" + bytes(range(128, 256)) + b"\n.\n" + b"x" * 990
    mailer = QueuedMailer(queue)
    with transaction.manager:
        queue_id = mailer.send(b"From: a@example.com\nTo: b@example.org\nSubject: bytes\n\n" + body)
    stored = queue.read(queue.find(queue_id))[1]
    Sender(make_settings(queue, smtp_sink.port)).run()
    assert len(smtp_sink.received) == 1
    expected = re.sub(rb"\r?\n", b"\r\n", stored)
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert smtp_sink.received[0].content == expected


def test_server_down_keeps_every_message_queued_and_exits_75(queue):
    ids = queue_messages(queue, 3)
    result = Sender(make_settings(queue, free_port(), smtp_timeout="2s")).run()
    assert result.exit_status == 75
    assert result.server_error
    assert states(queue) == {"queued": 3}
    for queue_id in ids:
        envelope, _ = queue.read(queue.find(queue_id))
        assert envelope.attempts == []
        assert [r.status for r in envelope.recipients] == ["pending"]


def test_451_to_every_recipient_defers_then_delivers_once_after_recovery(queue, smtp_sink):
    (queue_id,) = queue_messages(queue, 1, to=("ann@example.org", "bob@example.org"))
    smtp_sink.behaviour.rcpt_default = "451 4.3.0 try again later"
    settings = make_settings(queue, smtp_sink.port, min_backoff="5m")
    before = time.time()
    result = Sender(settings).run()
    assert result.exit_status == 75
    entry = queue.find(queue_id)
    assert entry.state == MessageState.DEFERRED
    assert before + 299 <= entry.mtime <= time.time() + 301  # next attempt after min_backoff
    envelope, _ = queue.read(entry)
    assert [r.status for r in envelope.recipients] == ["deferred", "deferred"]
    assert envelope.recipients[0].reply == "451 4.3.0 try again later"
    assert smtp_sink.received == []

    smtp_sink.behaviour.rcpt_default = None
    assert Sender(settings).run().attempts == 0  # not due yet
    result = Sender(settings).run(flush=True)
    assert result.exit_status == 0
    assert [m.rcpt_tos for m in smtp_sink.received] == [["ann@example.org", "bob@example.org"]]
    assert states(queue) == {}


def test_550_for_one_of_three_fails_it_and_delivers_the_others_once(queue, smtp_sink):
    to = ("ann@example.org", "bad@example.org", "cid@example.org")
    (queue_id,) = queue_messages(queue, 1, to=to)
    smtp_sink.behaviour.rcpt_replies["bad@example.org"] = "550 5.1.1 no such user"
    settings = make_settings(queue, smtp_sink.port)
    result = Sender(settings).run()
    assert result.exit_status == 1
    assert [m.rcpt_tos for m in smtp_sink.received] == [["ann@example.org", "cid@example.org"]]
    entry = queue.find(queue_id)
    assert entry.state == MessageState.FAILED
    envelope, _ = queue.read(entry)
    assert envelope.failure_reason == "rejected"
    assert {r.address: (r.status, r.reply) for r in envelope.recipients} == {
        "ann@example.org": ("delivered", "250 2.0.0 Message accepted"),
        "bad@example.org": ("failed", "550 5.1.1 no such user"),
        "cid@example.org": ("delivered", "250 2.0.0 Message accepted"),
    }
    assert Sender(settings).run(flush=True).attempts == 0  # failed mail is never retried by itself
    assert len(smtp_sink.received) == 1


def test_4xx_for_one_of_three_retries_only_that_recipient(queue, smtp_sink):
    to = ("ann@example.org", "busy@example.org", "cid@example.org")
    (queue_id,) = queue_messages(queue, 1, to=to)
    smtp_sink.behaviour.rcpt_replies["busy@example.org"] = "452 4.2.2 mailbox full"
    settings = make_settings(queue, smtp_sink.port)
    assert Sender(settings).run().exit_status == 75
    assert queue.find(queue_id).state == MessageState.DEFERRED
    smtp_sink.behaviour.rcpt_replies.clear()
    assert Sender(settings).run(flush=True).exit_status == 0
    assert [m.rcpt_tos for m in smtp_sink.received] == [
        ["ann@example.org", "cid@example.org"],
        ["busy@example.org"],
    ]


def test_552_too_many_recipients_is_temporary(queue, smtp_sink):
    (queue_id,) = queue_messages(queue, 1, to=("ann@example.org", "bob@example.org"))
    smtp_sink.behaviour.rcpt_replies["bob@example.org"] = "552 5.5.3 too many recipients"
    assert Sender(make_settings(queue, smtp_sink.port)).run().exit_status == 75
    envelope, _ = queue.read(queue.find(queue_id))
    assert [r.status for r in envelope.recipients] == ["delivered", "deferred"]


def test_554_after_data_fails_every_accepted_recipient(queue, smtp_sink):
    (queue_id,) = queue_messages(queue, 1, to=("ann@example.org", "bob@example.org"))
    smtp_sink.behaviour.data_reply = "554 5.7.1 looks like spam"
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.exit_status == 1
    envelope, _ = queue.read(queue.find(queue_id))
    assert [(r.status, r.reply) for r in envelope.recipients] == [("failed", "554 5.7.1 looks like spam")] * 2


def test_421_mid_run_reconnects_once_and_delivers_the_rest(queue, smtp_sink):
    queue_messages(queue, 5)
    smtp_sink.behaviour.close_after = 2
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.exit_status == 0
    assert len(smtp_sink.received) == 5
    assert smtp_sink.handler.sessions == 2
    assert len(set(smtp_sink.handler.message_ids())) == 5


def test_server_gone_after_a_421_stops_the_run_and_keeps_the_rest_queued(queue, smtp_sink):
    queue_messages(queue, 4)
    smtp_sink.behaviour.close_after = 2
    settings = make_settings(queue, smtp_sink.port, smtp_timeout="2s")
    sender = Sender(settings)
    real_open = __import__("mq_transaction.smtp", fromlist=["open_session"]).open_session
    calls = []

    def open_once(config):
        calls.append(config)
        if len(calls) > 1:
            smtp_sink.stop()
        return real_open(config)

    import mq_transaction.sender as sender_module

    original = sender_module.open_session
    sender_module.open_session = open_once
    try:
        result = sender.run()
    finally:
        sender_module.open_session = original
    assert result.exit_status == 75
    assert result.delivered == 2
    assert states(queue) == {"queued": 2}


def test_connection_dropped_after_data_defers_and_the_resend_keeps_the_message_id(queue, smtp_sink):
    """The duplicate window: the server took the message but the reply never came.

    The message is deferred (a dropped connection counts as 451) and sent again later
    with the same Message-ID, so the receiver can de-duplicate.
    """
    (queue_id,) = queue_messages(queue, 1)
    smtp_sink.behaviour.drop_after_data = True
    settings = make_settings(queue, smtp_sink.port)
    assert Sender(settings).run().exit_status == 75
    envelope, _ = queue.read(queue.find(queue_id))
    assert envelope.recipients[0].status == "deferred"
    assert envelope.recipients[0].reply.startswith("451 4.4.2 connection lost after the end of data")
    smtp_sink.behaviour.drop_after_data = False
    assert Sender(settings).run(flush=True).exit_status == 0
    ids = smtp_sink.handler.message_ids()
    assert len(ids) == 2 and ids[0] == ids[1] == envelope.message_id


def test_wrong_password_is_a_server_failure_not_a_message_failure(queue, tls_auth_sink, tmp_path):
    sink, ca_file = tls_auth_sink
    queue_messages(queue, 2)
    password_file = tmp_path / "password"
    password_file.write_text("wrong\n")
    settings = make_settings(
        queue,
        sink.port,
        smtp_tls="starttls",
        smtp_ca_file=ca_file,
        smtp_username=USERNAME,
        smtp_password_file=password_file,
    )
    result = Sender(settings).run()
    assert result.exit_status == 75
    assert "535" in result.server_error
    assert states(queue) == {"queued": 2}


def test_starttls_required_but_not_offered_sends_nothing_in_plaintext(queue, smtp_sink):
    queue_messages(queue, 1)
    result = Sender(make_settings(queue, smtp_sink.port, smtp_tls="starttls")).run()
    assert result.exit_status == 75
    assert "STARTTLS" in result.server_error
    assert smtp_sink.received == []
    assert states(queue) == {"queued": 1}


def test_self_signed_certificate_is_refused_without_its_ca_file(queue, tls_auth_sink):
    sink, _ca_file = tls_auth_sink
    queue_messages(queue, 1)
    result = Sender(make_settings(queue, sink.port, smtp_tls="starttls")).run()
    assert result.exit_status == 75
    assert "TLS" in result.server_error or "certificate" in result.server_error.lower()
    assert sink.received == []


def test_auth_over_starttls_with_a_ca_file_delivers_and_logs_no_secret(queue, tls_auth_sink, tmp_path, caplog):
    sink, ca_file = tls_auth_sink
    queue_messages(queue, 2)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")  # the trailing newline is stripped
    smtp_log = tmp_path / "smtp.log"
    from mq_transaction.config import attach_smtp_log

    handler = attach_smtp_log(str(smtp_log), propagate=True)
    try:
        settings = make_settings(
            queue,
            sink.port,
            smtp_tls="starttls",
            smtp_ca_file=ca_file,
            smtp_username=USERNAME,
            smtp_password_file=password_file,
        )
        result = Sender(settings).run()
    finally:
        import logging

        logging.getLogger("mq_transaction.smtp").removeHandler(handler)
        handler.close()
    assert result.exit_status == 0
    assert len(sink.received) == 2
    dialog = smtp_log.read_text()
    assert "STARTTLS" in dialog.upper() and "MAIL FROM:<app@example.com>" in dialog
    assert "AUTH" in dialog and "[redacted]" in dialog
    secrets = [
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USERNAME}\0{PASSWORD}".encode()).decode(),
    ]
    for secret in secrets:
        assert secret not in dialog
    assert "[message body," in dialog and "Hello" not in dialog


def test_a_corrupt_message_is_moved_to_corrupt_and_the_run_continues(queue, queue_backend, smtp_sink):
    good, bad, also_good = queue_messages(queue, 3)
    queue_backend.damage(bad)
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.exit_status == 1
    assert result.corrupt == 1 and result.delivered == 2
    assert queue.find(bad).state == "corrupt"
    assert len(smtp_sink.received) == 2


def test_message_still_undelivered_after_max_lifetime_fails_as_expired(queue, smtp_sink):
    (queue_id,) = queue_messages(queue, 1)
    smtp_sink.behaviour.rcpt_default = "451 4.3.0 try again later"
    settings = make_settings(queue, smtp_sink.port, max_lifetime="5d")
    later = time.time() + 5 * 86400 + 60
    result = Sender(settings, clock=lambda: later).run()
    assert result.exit_status == 1
    entry = queue.find(queue_id)
    assert entry.state == MessageState.FAILED
    envelope, _ = queue.read(entry)
    assert envelope.failure_reason == "expired"
    assert envelope.recipients[0].status == "failed"


def test_backoff_grows_with_the_message_age_between_minimum_and_maximum(queue, smtp_sink):
    (queue_id,) = queue_messages(queue, 1)
    smtp_sink.behaviour.rcpt_default = "451 4.3.0 later"
    settings = make_settings(queue, smtp_sink.port, min_backoff="5m", max_backoff="1h")
    queued_at = queue.read(queue.find(queue_id))[0].queued_at
    for age, backoff in ((60, 300), (20 * 60, 20 * 60), (3 * 3600, 3600)):
        now = queued_at + age
        Sender(settings, clock=lambda now=now: now).run(flush=True)
        assert queue.find(queue_id).mtime == pytest.approx(now + backoff, abs=1)
    envelope, _ = queue.read(queue.find(queue_id))
    assert [a.result for a in envelope.attempts] == ["deferred"] * 3


def test_hooks_get_each_outcome_and_a_raising_hook_changes_nothing(queue, smtp_sink):
    ok_id, bad_id, later_id = queue_messages(queue, 3, to=("ann@example.org",))
    events = []
    hooks = Hooks()

    def explode(event):
        raise RuntimeError("hook bug")

    for kind in ("delivered", "deferred", "failed"):
        hooks.add(kind, events.append)
        hooks.add(kind, explode)

    replies = iter(["250 OK", "550 5.1.1 unknown", "451 4.2.0 later"])

    async def rcpt(server, session, envelope, address, options):
        reply = next(replies)
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    smtp_sink.handler.handle_RCPT = rcpt
    result = Sender(make_settings(queue, smtp_sink.port), hooks=hooks).run()
    assert (result.delivered, result.failed, result.deferred) == (1, 1, 1)
    assert [(e.state, e.queue_id) for e in events] == [
        ("delivered", ok_id),
        ("failed", bad_id),
        ("deferred", later_id),
    ]
    assert events[1].reason == "rejected" and events[1].recipients[0].reply == "550 5.1.1 unknown"
    assert events[2].next_attempt is not None and events[2].attempt == 1
    assert events[0].message_id.startswith("<") and events[0].sender == SENDER
    assert queue.find(bad_id).state == MessageState.FAILED
    assert queue.find(later_id).state == MessageState.DEFERRED


def test_hooks_named_in_settings_are_called(queue, smtp_sink, tmp_path, monkeypatch):
    (tmp_path / "myhooks.py").write_text("seen = []\ndef on_delivered(event):\n    seen.append(event.queue_id)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "myhooks", raising=False)  # the other queue's run imported its own
    (queue_id,) = queue_messages(queue, 1)
    Sender(make_settings(queue, smtp_sink.port, on_delivered="myhooks:on_delivered")).run()
    import myhooks

    assert myhooks.seen == [queue_id]


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_delivery_log_has_one_line_per_attempt_with_each_recipient(queue, smtp_sink, tmp_path, fmt):
    (queue_id,) = queue_messages(queue, 1, to=("ann@example.org", "bad@example.org"))
    smtp_sink.behaviour.rcpt_replies["bad@example.org"] = "550 5.1.1 no such user"
    log_file = tmp_path / "delivery.log"
    settings = make_settings(queue, smtp_sink.port, delivery_log=log_file, delivery_log_format=fmt)
    Sender(settings).run()
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1
    envelope, _ = queue.read(queue.find(queue_id))
    if fmt == "json":
        record = json.loads(lines[0])
        assert record["queue_id"] == queue_id and record["message_id"] == envelope.message_id
        assert record["recipients"] == [
            {"address": "ann@example.org", "status": "delivered", "reply": "250 2.0.0 Message accepted"},
            {"address": "bad@example.org", "status": "failed", "reply": "550 5.1.1 no such user"},
        ]
        assert record["state"] == "failed" and record["attempt"] == 1 and record["from"] == SENDER
    else:
        line = lines[0]
        assert f"queue_id={queue_id}" in line
        assert 'to=bad@example.org status=failed reply="550 5.1.1 no such user"' in line
        assert "state=failed" in line and "attempt=1" in line and "delay=" in line


def test_dead_senders_claim_goes_back_to_the_queue(queue, smtp_sink):
    (queue_id,) = queue_messages(queue, 1)
    claim = queue.claim(queue_id)
    assert queue.find(queue_id).state == "sending"
    assert queue.recover_stale_claims() == []  # still locked by a live claim
    claim.release()  # the owner "dies": its lock goes with it
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.recovered == 1 and result.delivered == 1


def test_non_ascii_addresses_use_smtputf8(queue, smtp_sink):
    mailer = QueuedMailer(queue)
    with transaction.manager:
        mailer.send("From: jörg@exämple.de\nTo: zoë@exämple.org\nSubject: x\n\nhi\n")
    assert Sender(make_settings(queue, smtp_sink.port)).run().exit_status == 0
    assert smtp_sink.received[0].rcpt_tos == ["zoë@exämple.org"]
    assert states(queue) == {}
    assert MessageState.QUEUED  # the state constant exists for the table in docs


def test_parallel_connections_share_the_queue_without_duplicates(queue, smtp_sink):
    queue_messages(queue, 40)
    result = Sender(make_settings(queue, smtp_sink.port, smtp_connections=3)).run()
    assert result.exit_status == 0
    assert result.delivered == 40 and result.connections == 3
    assert smtp_sink.handler.sessions == 3
    ids = smtp_sink.handler.message_ids()
    assert len(ids) == len(set(ids)) == 40
    assert states(queue) == {}


def test_an_unexpected_error_keeps_the_message_queued_and_stops_the_run(queue, smtp_sink, monkeypatch):
    from mq_transaction.smtp import DialogSMTP

    queue_messages(queue, 3)

    def broken(self, sender, recipients, message, next_message=None):
        raise RuntimeError("a bug nobody planned for")

    monkeypatch.setattr(DialogSMTP, "send_message_bytes", broken)
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.exit_status == 75
    assert "a bug nobody planned for" in result.server_error
    assert states(queue) == {"queued": 3}


def test_message_with_nobody_left_to_try_is_settled_without_smtp(queue, smtp_sink):
    (queue_id,) = queue_messages(queue, 1)
    claim = queue.claim(queue_id)
    claim.envelope.recipients[0].status = "failed"
    claim.envelope.recipients[0].reply = "550 5.1.1 unknown"
    queue.unclaim(claim, envelope_changed=True)
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.failed == 1 and result.connections == 0
    assert queue.find(queue_id).state == MessageState.FAILED


def test_a_refusal_beside_a_deferral_makes_the_run_exit_1_and_is_logged_at_error(queue, smtp_sink, caplog):
    (queue_id,) = queue_messages(queue, 1, to=("bad@example.org", "busy@example.org"))
    smtp_sink.behaviour.rcpt_replies["bad@example.org"] = "550 5.1.1 no such user"
    smtp_sink.behaviour.rcpt_replies["busy@example.org"] = "451 4.3.0 try later"
    with caplog.at_level("INFO", logger="mq_transaction"):
        result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert queue.find(queue_id).state == MessageState.DEFERRED  # still waiting for busy@
    assert result.refused == 1
    assert result.exit_status == 1  # 1 wins over 75
    [line] = [r for r in caplog.records if queue_id in r.getMessage()]
    assert line.levelname == "ERROR" and "550 5.1.1 no such user" in line.getMessage()


@pytest.mark.parametrize(
    "refusal",
    ["554 5.7.1 <x@example.org>: Relay access denied", "530 5.7.0 Authentication required"],
)
def test_a_relay_that_refuses_to_relay_keeps_every_message_queued_and_exits_75(queue, smtp_sink, caplog, refusal):
    ids = queue_messages(queue, 3, to=("ann@example.org", "bob@example.org"))
    smtp_sink.behaviour.rcpt_default = refusal
    with caplog.at_level("ERROR", logger="mq_transaction"):
        result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.exit_status == 75
    assert result.failed == result.refused == result.attempts == 0
    assert states(queue) == {MessageState.QUEUED: 3}
    for queue_id in ids:  # untouched: no attempt recorded, nobody marked failed
        envelope, _ = queue.read(queue.find(queue_id))
        assert envelope.attempts == [] and {r.status for r in envelope.recipients} == {"pending"}
    assert "mq.smtp_username" in result.server_error and "mq.smtp_tls" in result.server_error
    assert any("mq.smtp_username" in r.getMessage() for r in caplog.records)
    smtp_sink.behaviour.rcpt_default = None
    assert Sender(make_settings(queue, smtp_sink.port)).run().exit_status == 0
    assert len(smtp_sink.received) == 3


def test_a_policy_refusal_of_one_message_is_judged_once_the_server_relays_for_us(queue, smtp_sink):
    (blocked,) = queue_messages(queue, 1, to=("blocked@example.org",))
    (fine,) = queue_messages(queue, 1, to=("ann@example.org",))
    smtp_sink.behaviour.rcpt_replies["blocked@example.org"] = "554 5.7.1 <blocked@example.org>: Access denied"
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.exit_status == 1 and result.delivered == 1 and result.failed == 1
    assert queue.find(blocked).state == MessageState.FAILED
    envelope, _ = queue.read(queue.find(blocked))
    assert envelope.recipients[0].reply == "554 5.7.1 <blocked@example.org>: Access denied"


def test_a_lone_policy_refusal_without_proof_that_the_server_relays_keeps_the_message(queue, smtp_sink):
    (blocked,) = queue_messages(queue, 1, to=("blocked@example.org",))
    smtp_sink.behaviour.rcpt_replies["blocked@example.org"] = "554 5.7.1 <blocked@example.org>: Access denied"
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.exit_status == 75 and queue.find(blocked).state == MessageState.QUEUED


class ConnectionLimitedSMTP(SMTP):
    """An aiosmtpd session that answers ``421 too many connections`` beyond a limit."""

    async def _handle_client(self):
        handler = self.event_handler
        with handler.lock:
            handler.open_sessions += 1
            refused = handler.open_sessions > handler.session_limit
            if refused:
                handler.open_sessions -= 1
                handler.refused_sessions += 1
        if refused:
            await self.push("421 4.7.0 Error: too many connections from 127.0.0.1")
            self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            with handler.lock:
                handler.open_sessions -= 1


class ConnectionLimitedController(Controller):
    def factory(self):
        return ConnectionLimitedSMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def limited_sink():
    """A server that allows two sessions at a time from us, as a relay's connection limit does."""
    handler = RecordingHandler()
    handler.open_sessions = handler.refused_sessions = 0
    handler.session_limit = 2
    port = free_port()
    controller = ConnectionLimitedController(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@slow_on_database
def test_default_settings_open_more_sessions_only_for_a_backlog(queue, smtp_sink):
    queue_messages(queue, 1)
    assert Sender(make_settings(queue, smtp_sink.port)).run().connections == 1
    queue_messages(queue, 200)
    result = Sender(make_settings(queue, smtp_sink.port)).run()
    assert result.exit_status == 0 and result.delivered == 200
    assert result.connections == 4  # the default mq.smtp_connections
    assert len(set(smtp_sink.handler.message_ids())) == 201 == len(smtp_sink.received)


@slow_on_database
def test_421_too_many_connections_means_fewer_sessions_not_deferred_mail(queue, limited_sink, caplog):
    handler, port = limited_sink
    queue_messages(queue, 200)
    sender = Sender(make_settings(queue, port))
    with caplog.at_level("WARNING", logger="mq_transaction"):
        result = sender.run()
    assert handler.refused_sessions >= 1
    assert result.exit_status == 0 and result.server_error is None
    assert result.delivered == 200 and result.deferred == 0
    assert states(queue) == {}
    assert len(set(handler.message_ids())) == 200 == len(handler.received)  # no duplicates
    assert any("refused" in r.getMessage() and "additional session" in r.getMessage() for r in caplog.records)
    assert sender.sessions_for(200) < 4  # and it remembers for a while


def test_parallel_sessions_still_stop_at_a_server_level_failure(queue):
    queue_messages(queue, 100)
    result = Sender(make_settings(queue, free_port())).run()
    assert result.exit_status == 75 and result.attempts == 0
    assert states(queue) == {MessageState.QUEUED: 100}


@slow_on_database
def test_attempt_records_stay_bounded(queue, smtp_sink):
    to = tuple(f"user{n}@example.org" for n in range(250))
    (queue_id,) = queue_messages(queue, 1, to=to)
    smtp_sink.behaviour.rcpt_default = "451 4.3.0 try later"
    settings = make_settings(queue, smtp_sink.port)
    for _ in range(13):
        assert Sender(settings).run(flush=True).exit_status == 75
    envelope, _ = queue.read(queue.find(queue_id))
    assert [a.number for a in envelope.attempts] == list(range(4, 14))  # the last 10 attempts
    last = envelope.attempts[-1]
    assert len(last.replies) == 100 and last.more_recipients == 150
    assert all(r.reply == "451 4.3.0 try later" for r in envelope.recipients)  # every last reply kept
