"""Our smtplib extension on the wire: pipelining, ESMTP options, implicit TLS, the dialog log."""

from __future__ import annotations

import logging
import ssl

import pytest
import transaction
from smtp_sinks import RecordingHandler, Sink, make_certificate

from mq_transaction import MessageQueue, QueuedMailer
from mq_transaction.sender import Sender
from mq_transaction.settings import parse_settings
from mq_transaction.smtp import needs_smtputf8, wire_format


def settings_for(queue, port, **extra):
    raw = {"mq.queue_dir": queue.path, "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(port)}
    raw.update({f"mq.{k}": str(v) for k, v in extra.items()})
    return parse_settings(raw)


@pytest.fixture
def queue(tmp_path):
    return MessageQueue(tmp_path / "queue")


def send(queue, message, **kwargs):
    with transaction.manager:
        return QueuedMailer(queue).send(message, **kwargs)


def test_wire_format_normalises_line_endings_and_stuffs_dots():
    assert wire_format(b"a\nb\r\nc\r.d\n.\n") == b"a\r\nb\r\nc\r\n..d\r\n..\r\n"
    assert wire_format(b"no newline at end") == b"no newline at end\r\n"


def test_smtputf8_needed_only_for_non_ascii_addresses():
    assert needs_smtputf8("jörg@example.de", ["a@example.org"])
    assert needs_smtputf8("a@example.org", ["zoë@example.org"])
    assert not needs_smtputf8("a@example.org", ["b@example.org"])


def test_size_and_8bitmime_are_declared_when_offered(queue, smtp_sink):
    send(queue, b"From: a@example.com\nTo: b@example.org\n\n" + "caf\u00e9\n".encode())
    Sender(settings_for(queue, smtp_sink.port)).run()
    options = smtp_sink.received[0].mail_options
    assert any(option.startswith("SIZE=") for option in options)
    assert "BODY=8BITMIME" in options
    assert "SMTPUTF8" not in options


def test_pipelining_sends_mail_and_rcpt_in_one_batch_when_offered(queue, smtp_sink, caplog):
    smtp_sink.handler.offer_pipelining = True
    smtp_sink.behaviour.rcpt_replies["no@example.org"] = "550 5.1.1 unknown"
    send(queue, b"From: a@example.com\nTo: b@example.org, no@example.org, c@example.org\n\nhi\n")
    with caplog.at_level(logging.DEBUG, logger="mq_transaction.smtp"):
        result = Sender(settings_for(queue, smtp_sink.port)).run()
    assert result.failed == 1
    assert smtp_sink.received[0].rcpt_tos == ["b@example.org", "c@example.org"]
    dialog = [r.getMessage().split("] ", 1)[1] for r in caplog.records if r.name == "mq_transaction.smtp"]
    mail = next(i for i, line in enumerate(dialog) if line.startswith("C: MAIL FROM"))
    # the three RCPTs follow MAIL FROM before any reply is read
    assert [line[:10] for line in dialog[mail + 1 : mail + 4]] == ["C: RCPT TO"] * 3
    assert dialog[mail + 4].startswith("S: 250")


def test_dialog_log_records_every_command_and_reply_line(queue, smtp_sink, caplog):
    send(queue, b"From: a@example.com\nTo: b@example.org\n\nsecret body text\n")
    with caplog.at_level(logging.DEBUG, logger="mq_transaction.smtp"):
        Sender(settings_for(queue, smtp_sink.port)).run()
    dialog = "\n".join(r.getMessage() for r in caplog.records if r.name == "mq_transaction.smtp")
    for expected in ("S: 220 ", "C: ehlo", "S: 250-", "C: MAIL FROM:<a@example.com>", "C: RCPT TO:<b@example.org>"):
        assert expected in dialog
    assert "C: DATA" in dialog and "S: 354" in dialog and "C: quit" in dialog
    assert "secret body text" not in dialog and "[message body," in dialog


def test_message_bodies_are_logged_only_when_asked(queue, smtp_sink, caplog):
    send(queue, b"From: a@example.com\nTo: b@example.org\n\nvisible body text\n")
    with caplog.at_level(logging.DEBUG, logger="mq_transaction.smtp"):
        Sender(settings_for(queue, smtp_sink.port, smtp_log_bodies="true")).run()
    assert "visible body text" in "\n".join(r.getMessage() for r in caplog.records)


def test_implicit_tls_on_connect_with_a_ca_file(queue, tmp_path):
    cert_file, key_file = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    sink = Sink(RecordingHandler(), ssl_context=context)
    try:
        send(queue, b"From: a@example.com\nTo: b@example.org\n\nover TLS\n")
        refused = Sender(settings_for(queue, sink.port, smtp_tls="ssl")).run()  # unknown CA
        assert refused.exit_status == 75 and sink.received == []
        result = Sender(settings_for(queue, sink.port, smtp_tls="ssl", smtp_ca_file=cert_file)).run()
        assert result.exit_status == 0
        assert len(sink.received) == 1
    finally:
        sink.stop()


def test_disabling_verification_is_explicit(queue, tmp_path):
    cert_file, key_file = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    sink = Sink(RecordingHandler(), ssl_context=context)
    try:
        send(queue, b"From: a@example.com\nTo: b@example.org\n\nx\n")
        result = Sender(settings_for(queue, sink.port, smtp_tls="ssl", smtp_tls_verify="false")).run()
        assert result.exit_status == 0
    finally:
        sink.stop()


def test_tls_defaults_to_none_on_loopback_and_starttls_elsewhere():
    assert parse_settings({"mq.queue_dir": "/q", "mq.smtp_host": "127.0.0.1"}).effective_tls == "none"
    assert parse_settings({"mq.queue_dir": "/q", "mq.smtp_host": "localhost"}).effective_tls == "none"
    remote = parse_settings({"mq.queue_dir": "/q", "mq.smtp_host": "smtp.example.com"})
    assert remote.effective_tls == "starttls" and remote.effective_port == 25
    assert parse_settings({"mq.queue_dir": "/q", "mq.smtp_tls": "ssl"}).effective_port == 465
