"""Non-ASCII (SMTPUTF8) addresses from ``send()`` to the raw ``RCPT TO`` line on the wire.

The server here is :mod:`raw_smtp`'s scripted one, which keeps every byte it received:
aiosmtpd would decode the commands and hide an encoded word or an A-label. Every test runs
on both queues (``queue_backend``: the directory queue, the database queue).
"""

from __future__ import annotations

from email.message import EmailMessage

import pytest
import transaction
from queue_backends import queue_settings
from raw_smtp import ScriptedSMTP

from mq_transaction import QueuedMailer
from mq_transaction.sender import Sender
from mq_transaction.settings import parse_settings
from mq_transaction.states import MessageState


@pytest.fixture
def queue(queue_backend):
    return queue_backend.queue


def lines(script: ScriptedSMTP, verb: bytes) -> list[bytes]:
    """The raw command lines starting with ``verb``, exactly as they arrived."""
    return [line for line in b"".join(script.chunks).split(b"\r\n") if line.startswith(verb)]


def deliver(queue, port, message, **envelope):
    """Queue ``message`` in a committed transaction, run the sender once; return the run and the queue id."""
    with transaction.manager:
        queue_id = QueuedMailer(queue).send(message, **envelope)
    settings = parse_settings({**queue_settings(queue), "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(port)})
    return Sender(settings).run(), queue_id


#: Servers without SMTPUTF8, each taking a different path through the client.
WITHOUT_SMTPUTF8 = [("8BITMIME",), ("PIPELINING", "8BITMIME"), ("PIPELINING", "CHUNKING", "8BITMIME")]


def email_message(to: str) -> EmailMessage:
    message = EmailMessage()  # the default policy, as a new user writes it
    message["From"] = "App <app@example.com>"
    message["To"] = to
    message["Subject"] = "caf\u00e9"
    message.set_content("bonjour\n")
    return message


def test_an_email_message_to_a_non_ascii_address_reaches_rcpt_to_as_written(queue, raw_smtp):
    sink, port = raw_smtp(extensions=["PIPELINING", "8BITMIME", "SMTPUTF8"])
    result, _queue_id = deliver(queue, port, email_message("Jos\u00e9 <jos\u00e9@b\u00fccher.example>"))
    assert result.exit_status == 0
    assert lines(sink, b"RCPT") == ["RCPT TO:<jos\u00e9@b\u00fccher.example>".encode()]
    (mail_line,) = lines(sink, b"MAIL")
    assert mail_line.startswith(b"MAIL FROM:<app@example.com>") and b" SMTPUTF8" in mail_line
    # The header carries the address in UTF-8 too (RFC 6532), not an encoded word.
    (received,) = sink.messages
    assert "To: Jos\u00e9 <jos\u00e9@b\u00fccher.example>\r\n".encode() in received.content
    assert b"=?" not in received.content.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("extensions", WITHOUT_SMTPUTF8, ids=["one-by-one", "pipelined", "chunked"])
def test_without_smtputf8_a_non_ascii_domain_goes_out_as_its_a_label(queue, raw_smtp, extensions):
    sink, port = raw_smtp(extensions=list(extensions))
    message = b"From: app@example.com\r\nTo: ann@B\xc3\xbccher.example, bob@example.org\r\nSubject: x\r\n\r\nhi\r\n"
    result, _queue_id = deliver(queue, port, message)
    assert result.exit_status == 0
    assert lines(sink, b"RCPT") == [b"RCPT TO:<ann@xn--bcher-kva.example>", b"RCPT TO:<bob@example.org>"]
    (mail_line,) = lines(sink, b"MAIL")
    assert b"SMTPUTF8" not in mail_line and mail_line.isascii()
    assert len(sink.messages) == 1


@pytest.mark.parametrize("extensions", WITHOUT_SMTPUTF8, ids=["one-by-one", "pipelined", "chunked"])
def test_without_smtputf8_a_non_ascii_local_part_fails_that_recipient_saying_why(queue, raw_smtp, extensions):
    sink, port = raw_smtp(extensions=list(extensions))
    message = email_message("jos\u00e9@example.org, ann@example.org")
    result, queue_id = deliver(queue, port, message)
    assert result.exit_status == 1  # a permanent failure
    assert lines(sink, b"RCPT") == [b"RCPT TO:<ann@example.org>"]
    assert len(sink.messages) == 1
    entry = queue.find(queue_id)
    assert entry.state == MessageState.FAILED
    envelope, _message = queue.read(entry)
    by_address = {r.address: r for r in envelope.recipients}
    assert by_address["ann@example.org"].status == "delivered"
    refused = by_address["jos\u00e9@example.org"]
    assert refused.status == "failed"
    assert refused.reply.startswith("553 5.6.7 ")
    assert "SMTPUTF8" in refused.reply and "local part" in refused.reply


@pytest.mark.parametrize("extensions", WITHOUT_SMTPUTF8, ids=["one-by-one", "pipelined", "chunked"])
def test_without_smtputf8_a_non_ascii_sender_local_part_fails_every_recipient_sending_nothing(
    queue, raw_smtp, extensions
):
    sink, port = raw_smtp(extensions=list(extensions))
    message = "From: j\u00f6rg@example.de\r\nTo: ann@example.org, bob@example.org\r\n\r\nhi\r\n"
    result, queue_id = deliver(queue, port, message)
    assert result.exit_status == 1
    assert sink.messages == [] and lines(sink, b"MAIL") == []
    envelope, _message = queue.read(queue.find(queue_id))
    assert {r.status for r in envelope.recipients} == {"failed"}
    assert all("envelope sender" in r.reply and "SMTPUTF8" in r.reply for r in envelope.recipients)
