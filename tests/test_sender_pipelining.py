"""The sender beginning each message's transaction in the write that ends the previous one (RFC 2920 3.1).

Against :mod:`raw_smtp`'s scripted server, which keeps every write as it arrived: one
write carries a message's final dot and the next message's MAIL FROM, RCPT TOs and DATA;
the first message is recorded before the second's replies are read; a hang-up, a 421 or
a refusal in the second transaction never changes the first one's recorded result, and
nothing is delivered twice. Every test runs on both queues (``queue_backend``).
"""

from __future__ import annotations

import pytest
import transaction
from queue_backends import queue_settings

from mq_transaction import QueuedMailer
from mq_transaction.sender import RunResult, Sender
from mq_transaction.settings import parse_settings
from mq_transaction.states import MessageState

SENDER = "app@example.com"


@pytest.fixture
def queue(queue_backend):
    return queue_backend.queue


def sender_for(queue, port, **extra) -> Sender:
    raw = {**queue_settings(queue), "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(port)}
    raw.update({f"mq.{key}": str(value) for key, value in extra.items()})
    return Sender(parse_settings(raw))


def queue_messages(queue, recipients_of_each):
    """One committed message per item of ``recipients_of_each``; their queue ids."""
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    ids = []
    for number, recipients in enumerate(recipients_of_each):
        with mailer.transaction_manager:
            message = f"From: {SENDER}\nTo: {', '.join(recipients)}\nSubject: message {number}\n\nbody {number}\n"
            ids.append(mailer.send(message.encode()))
    return ids


def subjects(script):
    return [m.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode() for m in script.messages]


def queued_ids(queue):
    return {entry.queue_id for entry in queue.entries()}


def states(queue):
    counts = {}
    for entry in queue.entries():
        counts[entry.state] = counts.get(entry.state, 0) + 1
    return counts


def test_each_final_dot_shares_its_write_with_the_next_messages_group(queue, raw_smtp):
    script, port = raw_smtp()
    queue_messages(queue, [["a@example.org"]] * 5)
    result = sender_for(queue, port).run()
    assert result.exit_status == 0 and result.delivered == 5 and result.connections == 1
    assert subjects(script) == [f"message {n}" for n in range(5)]
    dot_then_group = [chunk for chunk in script.chunks if b"\r\n.\r\nMAIL FROM:" in chunk]
    assert len(dot_then_group) == 4  # every message but the last: one round trip each
    for chunk in dot_then_group:
        assert chunk.endswith(b"RCPT TO:<a@example.org>\r\nDATA\r\n")
    assert states(queue) == {}


def test_the_second_message_of_a_group_keeps_each_recipients_own_fate(queue, raw_smtp):
    script, port = raw_smtp(
        rcpt_replies={"no@example.org": "550 5.1.1 no such user", "later@example.org": "451 4.2.0 mailbox busy"}
    )
    first, second = queue_messages(queue, [["a@example.org"], ["b@example.org", "no@example.org", "later@example.org"]])
    result = sender_for(queue, port).run()
    assert any(b"\r\n.\r\nMAIL FROM:" in chunk for chunk in script.chunks)
    assert result.exit_status == 1  # a recipient refused for good
    assert first not in queued_ids(queue)  # delivered, removed
    entry = queue.find(second)
    assert entry.state == MessageState.DEFERRED
    envelope, _ = queue.read(entry)
    assert [(r.address, r.status, r.reply) for r in envelope.recipients] == [
        ("b@example.org", "delivered", "250 2.0.0 queued"),
        ("no@example.org", "failed", "550 5.1.1 no such user"),
        ("later@example.org", "deferred", "451 4.2.0 mailbox busy"),
    ]
    assert [m.recipients for m in script.messages] == [["a@example.org"], ["b@example.org"]]


def test_a_server_hanging_up_after_each_first_250_delivers_every_message_once(queue, raw_smtp):
    script, port = raw_smtp(close_after_messages=1)
    queue_messages(queue, [["a@example.org"]] * 3)
    result = sender_for(queue, port).run()
    # message 1's 250, then the hang-up: message 2 (begun) is tried again on a new session, and so on
    assert result.exit_status == 0 and result.delivered == 3
    assert subjects(script) == ["message 0", "message 1", "message 2"]
    assert result.connections == 3
    assert states(queue) == {}


def test_a_421_in_the_next_messages_group_reconnects_and_delivers_the_rest_once(queue, raw_smtp):
    script, port = raw_smtp(mail_replies={2: "421 4.3.2 shutting down"})
    queue_messages(queue, [["a@example.org"]] * 4)
    result = sender_for(queue, port).run()
    assert result.exit_status == 0 and result.delivered == 4 and result.deferred == 0
    assert subjects(script) == [f"message {n}" for n in range(4)]
    assert result.connections == 2
    assert states(queue) == {}


def test_a_lost_connection_after_a_dot_defers_that_message_only(queue, raw_smtp):
    # the server takes message 0 and hangs up without its reply: the duplicate window, for it alone
    script, port = raw_smtp(data_replies={1: ""})
    first, *rest = queue_messages(queue, [["a@example.org"]] * 3)
    result = sender_for(queue, port).run()
    envelope, _ = queue.read(queue.find(first))
    assert envelope.recipients[0].status == "deferred"
    assert envelope.recipients[0].reply.startswith("451 4.4.2 connection lost after the end of data")
    assert result.deferred == 1 and result.exit_status == 75
    # the begun message 1 was never delivered by that session: the next session delivers the rest once
    assert subjects(script) == ["message 0", "message 1", "message 2"]
    assert not set(rest) & queued_ids(queue)
    assert result.connections == 2


def test_a_run_stopped_with_a_message_claimed_ahead_gives_it_back_undelivered(queue, raw_smtp):
    script, port = raw_smtp()
    ids = queue_messages(queue, [["a@example.org"]] * 3)
    sender = sender_for(queue, port)
    stopped = []
    sender.hooks.add("delivered", lambda event: stopped.append(event.queue_id))
    result = RunResult()
    try:
        sender.deliver(list(ids), result, should_stop=lambda: bool(stopped))
    finally:
        sender.close()
    assert result.delivered == 1
    assert subjects(script) == ["message 0"]  # message 1's group went out, its message never did
    assert script.mails == 2 and "QUIT" not in [c.upper() for c in script.commands]
    assert states(queue) == {MessageState.QUEUED: 2}  # given back, not left in sending/


def test_a_backlog_through_aiosmtpd_with_pipelining_reaches_each_recipient_once_with_exact_fates(queue, smtp_sink):
    """A real server's parser (aiosmtpd, offering PIPELINING) reads every dot + next group right."""
    smtp_sink.handler.offer_pipelining = True
    smtp_sink.behaviour.rcpt_replies = {"no@example.org": "550 5.1.1 no such user"}
    groups = [["a@example.org", "no@example.org"] if n % 3 == 1 else [f"r{n}@example.org"] for n in range(30)]
    ids = queue_messages(queue, groups)
    result = sender_for(queue, smtp_sink.port).run()
    assert result.attempts == 30 and result.connections == 3  # a backlog of 30: three sessions
    assert (result.delivered, result.failed, result.refused, result.exit_status) == (20, 10, 10, 1)
    received = {
        int(m.content.split(b"Subject: message ", 1)[1].split(b"\r\n", 1)[0]): m.rcpt_tos
        for m in smtp_sink.handler.received
    }
    assert len(smtp_sink.handler.received) == 30  # each message once
    assert received == {n: [address for address in groups[n] if address != "no@example.org"] for n in range(30)}
    assert states(queue) == {MessageState.FAILED: 10}  # the refused recipient's, each recorded exactly:
    for n in range(1, 30, 3):
        envelope, _ = queue.read(queue.find(ids[n]))
        assert [(r.status, r.reply) for r in envelope.recipients] == [
            ("delivered", "250 2.0.0 Message accepted"),
            ("failed", "550 5.1.1 no such user"),
        ]
