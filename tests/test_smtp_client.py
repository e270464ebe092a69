"""Our smtplib extension on the wire: pipelining, ESMTP options, implicit TLS, the dialog log."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time

import pytest
import transaction
from postfix_server import PostfixSmtpd
from raw_smtp import RawServer
from smtp_sinks import RecordingHandler, Sink, make_certificate

from mq_transaction import MessageQueue, QueuedMailer
from mq_transaction.sender import Sender
from mq_transaction.settings import parse_settings
from mq_transaction.smtp import (
    LOST_AFTER_DATA,
    MAX_REPLY_BYTES,
    TLS_NONE,
    TLS_SSL,
    TLS_STARTTLS,
    ConnectionLost,
    ServerConfig,
    ServerError,
    close_session,
    needs_smtputf8,
    open_session,
    wire_format,
)


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


def test_pipelining_sends_mail_rcpt_and_data_in_one_batch_when_offered(queue, smtp_sink, caplog):
    smtp_sink.handler.offer_pipelining = True
    smtp_sink.behaviour.rcpt_replies["no@example.org"] = "550 5.1.1 unknown"
    send(queue, b"From: a@example.com\nTo: b@example.org, no@example.org, c@example.org\n\nhi\n")
    with caplog.at_level(logging.DEBUG, logger="mq_transaction.smtp"):
        result = Sender(settings_for(queue, smtp_sink.port)).run()
    assert result.failed == 1
    assert smtp_sink.received[0].rcpt_tos == ["b@example.org", "c@example.org"]
    dialog = [r.getMessage().split("] ", 1)[1] for r in caplog.records if r.name == "mq_transaction.smtp"]
    mail = next(i for i, line in enumerate(dialog) if line.startswith("C: MAIL FROM"))
    # the three RCPTs and DATA follow MAIL FROM before any reply is read
    assert [line[:10] for line in dialog[mail + 1 : mail + 5]] == ["C: RCPT TO"] * 3 + ["C: DATA"]
    assert dialog[mail + 5].startswith("S: 250")


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


# -- pipelining DATA and BDAT (issue 11), against a raw server that records every write ------------

MESSAGE = b"From: a@example.com\r\nTo: ok@example.org\r\nSubject: grouped\r\n\r\n.a line with a dot\r\nbye\r\n"


def session_to(port, **options):
    options.setdefault("timeout", 5)
    options.setdefault("tls", TLS_NONE)
    return open_session(ServerConfig(host="127.0.0.1", port=port, **options))


def statuses(outcome):
    return {address: outcome.status(address) for address in outcome.replies}


def test_pipelining_sends_mail_every_rcpt_and_data_in_one_write(raw_smtp):
    script, port = raw_smtp(extensions=["PIPELINING", "SIZE 1000000"])
    session = session_to(port)
    try:
        outcome = session.send_message_bytes("a@example.com", ["ok@example.org", "ok2@example.org"], MESSAGE)
    finally:
        close_session(session)
    group = [write for write in script.command_writes() if write[0].startswith("MAIL")]
    assert group == [
        [
            f"MAIL FROM:<a@example.com> SIZE={len(wire_format(MESSAGE))}",
            "RCPT TO:<ok@example.org>",
            "RCPT TO:<ok2@example.org>",
            "DATA",
        ]
    ]
    assert statuses(outcome) == {"ok@example.org": "delivered", "ok2@example.org": "delivered"}
    assert [(m.command, m.recipients, m.content) for m in script.messages] == [
        ("DATA", ["ok@example.org", "ok2@example.org"], MESSAGE)
    ]


def test_a_pipelined_group_records_a_refused_and_a_deferred_recipient_each_with_its_own_reply(raw_smtp):
    script, port = raw_smtp(
        rcpt_replies={"no@example.org": "550 5.1.1 no such user", "later@example.org": "451 4.2.0 mailbox busy"}
    )
    session = session_to(port)
    try:
        outcome = session.send_message_bytes(
            "a@example.com", ["ok@example.org", "no@example.org", "later@example.org"], MESSAGE
        )
    finally:
        close_session(session)
    assert statuses(outcome) == {
        "ok@example.org": "delivered",
        "no@example.org": "failed",
        "later@example.org": "deferred",
    }
    assert str(outcome.replies["no@example.org"]) == "550 5.1.1 no such user"
    assert str(outcome.replies["later@example.org"]) == "451 4.2.0 mailbox busy"
    assert str(outcome.replies["ok@example.org"]) == "250 2.0.0 queued"
    assert [m.recipients for m in script.messages] == [["ok@example.org"]]


def test_when_every_pipelined_rcpt_is_refused_data_is_refused_and_no_body_is_sent(raw_smtp, caplog):
    script, port = raw_smtp(
        rcpt_replies={"no@example.org": "550 5.1.1 no such user", "later@example.org": "451 4.2.0 busy"}
    )
    session = session_to(port)
    try:
        with caplog.at_level(logging.DEBUG, logger="mq_transaction.smtp"):
            refused = session.send_message_bytes("a@example.com", ["no@example.org", "later@example.org"], MESSAGE)
        dialog = [r.getMessage().split("] ", 1)[1] for r in caplog.records if r.name == "mq_transaction.smtp"]
        # the session stays in step: the next message on it goes through
        accepted = session.send_message_bytes("a@example.com", ["ok@example.org"], MESSAGE)
    finally:
        close_session(session)
    assert statuses(refused) == {"no@example.org": "failed", "later@example.org": "deferred"}
    assert statuses(accepted) == {"ok@example.org": "delivered"}
    assert "S: 554 5.5.1 no valid recipients" in dialog
    assert not any(line.startswith("C: [message body") for line in dialog)
    assert len(script.messages) == 1
    assert script.commands[script.commands.index("DATA") + 1].upper() == "RSET"


def test_without_pipelining_each_command_waits_for_its_reply(raw_smtp):
    script, port = raw_smtp(extensions=["8BITMIME", "CHUNKING"], rcpt_replies={"no@example.org": "550 5.1.1 no"})
    session = session_to(port)
    try:
        outcome = session.send_message_bytes("a@example.com", ["ok@example.org", "no@example.org"], MESSAGE)
    finally:
        close_session(session)
    transaction_writes = [w for w in script.command_writes() if not w[0].lower().startswith(("ehlo", "quit"))]
    assert transaction_writes == [
        ["MAIL FROM:<a@example.com>"],
        ["RCPT TO:<ok@example.org>"],
        ["RCPT TO:<no@example.org>"],
        ["DATA"],
    ]
    assert statuses(outcome) == {"ok@example.org": "delivered", "no@example.org": "failed"}
    assert [m.command for m in script.messages] == ["DATA"]  # CHUNKING without PIPELINING: DATA


def test_chunking_sends_bdat_last_and_the_message_in_the_same_write_as_mail_and_rcpt(raw_smtp, caplog):
    script, port = raw_smtp(
        extensions=["PIPELINING", "CHUNKING", "SIZE 1000000"], rcpt_replies={"later@example.org": "452 4.2.2 full"}
    )
    message = b"Subject: bare LF\n\n.a dot line stays as it is\n"
    body = b"Subject: bare LF\r\n\r\n.a dot line stays as it is\r\n"  # CRLF, never dot-stuffed
    session = session_to(port)
    try:
        with caplog.at_level(logging.DEBUG, logger="mq_transaction.smtp"):
            outcome = session.send_message_bytes("a@example.com", ["ok@example.org", "later@example.org"], message)
    finally:
        close_session(session)
    mail_writes = [chunk for chunk in script.chunks if chunk.startswith(b"MAIL")]
    assert mail_writes == [
        f"MAIL FROM:<a@example.com> SIZE={len(body)}\r\nRCPT TO:<ok@example.org>\r\nRCPT TO:<later@example.org>\r\n"
        f"BDAT {len(body)} LAST\r\n".encode()
        + body
    ]
    assert "DATA" not in script.commands
    assert statuses(outcome) == {"ok@example.org": "delivered", "later@example.org": "deferred"}
    assert [(m.command, m.recipients, m.content) for m in script.messages] == [("BDAT", ["ok@example.org"], body)]
    dialog = [r.getMessage().split("] ", 1)[1] for r in caplog.records if r.name == "mq_transaction.smtp"]
    assert f"C: BDAT {len(body)} LAST" in dialog and f"C: [message body, {len(body)} bytes]" in dialog


def test_chunking_with_every_rcpt_refused_keeps_each_refusal_and_the_session_usable(raw_smtp):
    script, port = raw_smtp(extensions=["PIPELINING", "CHUNKING"], rcpt_replies={"no@example.org": "550 5.1.1 no"})
    session = session_to(port)
    try:
        refused = session.send_message_bytes("a@example.com", ["no@example.org"], MESSAGE)
        accepted = session.send_message_bytes("a@example.com", ["ok@example.org"], MESSAGE)
    finally:
        close_session(session)
    assert str(refused.replies["no@example.org"]) == "550 5.1.1 no"
    assert statuses(accepted) == {"ok@example.org": "delivered"}
    assert [m.recipients for m in script.messages] == [["ok@example.org"]]


def test_a_connection_lost_after_a_bdat_group_is_the_duplicate_window(raw_smtp):
    def drop_after_the_group(connection):
        connection.sendall(b"220 raw.test\r\n")
        connection.recv(1000)
        connection.sendall(b"250-raw.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        connection.recv(65536)  # the whole group, message included; then the server is gone

    server = RawServer(drop_after_the_group)
    try:
        session = session_to(server.port)
        with pytest.raises(ConnectionLost) as lost:
            session.send_message_bytes("a@example.com", ["ok@example.org"], MESSAGE)
    finally:
        server.stop()
    assert lost.value.after_data
    assert lost.value.outcome.status("ok@example.org") == "deferred"
    assert "may have been delivered" in str(lost.value.outcome.replies["ok@example.org"])


# -- BDAT against a real server that offers CHUNKING: Debian's Postfix smtpd ---------------------


@pytest.fixture
def postfix(smtp_sink):
    """Postfix smtpd on 127.0.0.1, handing each transaction to ``smtp_sink`` (its before-queue proxy)."""
    server = PostfixSmtpd(proxy_port=smtp_sink.port)
    yield server
    server.stop()


@pytest.mark.slow
def test_bdat_against_postfix_smtpd_delivers_exact_bytes_with_each_recipient_own_reply(postfix, smtp_sink, caplog):
    smtp_sink.behaviour.rcpt_replies.update(
        {"no@example.org": "550 5.1.1 no such user", "later@example.org": "451 4.2.0 mailbox busy"}
    )
    message = b"From: a@example.com\nTo: ok@example.org\nSubject: chunked\n\n.dot line\ncaf\xc3\xa9\n"
    with caplog.at_level(logging.DEBUG, logger="mq_transaction.smtp"):
        session = session_to(postfix.port)
        try:
            outcome = session.send_message_bytes(
                "a@example.com", ["ok@example.org", "no@example.org", "later@example.org"], message
            )
            refused = session.send_message_bytes("a@example.com", ["no@example.org"], message)
            again = session.send_message_bytes("a@example.com", ["ok2@example.org"], message)
        finally:
            close_session(session)
    dialog = [r.getMessage().split("] ", 1)[1] for r in caplog.records if r.name == "mq_transaction.smtp"]
    assert "S: 250 CHUNKING" in dialog, postfix.log()
    assert not any(line == "C: DATA" for line in dialog)
    assert sum(line.startswith("C: BDAT ") and line.endswith(" LAST") for line in dialog) == 3
    assert statuses(outcome) == {
        "ok@example.org": "delivered",
        "no@example.org": "failed",
        "later@example.org": "deferred",
    }
    assert str(outcome.replies["no@example.org"]) == "550 5.1.1 no such user"
    assert str(outcome.replies["later@example.org"]) == "451 4.2.0 mailbox busy"
    # every RCPT refused: Postfix answers BDAT with its 554, and the session goes on
    assert statuses(refused) == {"no@example.org": "failed"}
    assert "S: 554 5.5.1 Error: no valid recipients" in dialog
    assert statuses(again) == {"ok2@example.org": "delivered"}
    assert [r.rcpt_tos for r in smtp_sink.received] == [["ok@example.org"], ["ok2@example.org"]]
    # what Postfix passed on: its Received header, then exactly our bytes with CRLF line endings
    for received in smtp_sink.received:
        assert received.content.startswith(b"Received: from ")
        assert received.content.endswith(message.replace(b"\n", b"\r\n"))


# -- servers that misbehave: tarpits, endless or garbage replies (issue 12 items 2 and 4) ----------


def trickle(payload: bytes, pause: float):
    """A ``RawServer`` handler that sends ``payload`` one byte at a time, forever, until the client leaves."""

    def serve(connection):
        while True:
            for byte in payload:
                connection.sendall(bytes([byte]))
                time.sleep(pause)

    return serve


def open_in_a_thread(port, timeout):
    """open_session() in a thread, so that a client that hangs fails the test instead of hanging it."""
    outcome = {}

    def run():
        try:
            outcome["session"] = session_to(port, timeout=timeout)
        except ServerError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the client hung on a tarpit"
    return outcome


@pytest.mark.slow
def test_a_greeting_trickled_byte_by_byte_ends_at_the_command_timeout_with_a_server_level_error():
    server = RawServer(trickle(b"220 a very slow greeting that never seems to end", 0.2))
    try:
        outcome = open_in_a_thread(server.port, timeout=1)
    finally:
        server.stop()
    assert "no complete reply within 1s (mq.smtp_timeout)" in str(outcome["error"])
    assert "tarpit" in str(outcome["error"])


@pytest.mark.slow
def test_an_endless_multiline_reply_ends_at_the_command_timeout():
    server = RawServer(trickle(b"220-still greeting you\r\n", 0.01))
    try:
        outcome = open_in_a_thread(server.port, timeout=1)
    finally:
        server.stop()
    assert "no complete reply within 1s" in str(outcome["error"])


def test_a_reply_over_64_kib_is_refused_before_the_timeout():
    def flood(connection):
        line = b"220-" + b"x" * 1000 + b"\r\n"
        while True:
            connection.sendall(line * 16)

    server = RawServer(flood)
    try:
        outcome = open_in_a_thread(server.port, timeout=600)
    finally:
        server.stop()
    assert f"reply longer than {MAX_REPLY_BYTES} bytes" in str(outcome["error"])
    assert MAX_REPLY_BYTES == 64 * 1024


def test_a_reply_that_is_not_smtp_is_a_server_level_error():
    server = RawServer(lambda connection: (connection.sendall(b"HTTP/1.1 400 Bad Request\r\n"), connection.recv(100)))
    try:
        outcome = open_in_a_thread(server.port, timeout=5)
    finally:
        server.stop()
    assert "unreadable reply 'HTTP/1.1 400 Bad Request'" in str(outcome["error"])


def test_a_long_but_complete_reply_within_the_limits_is_read_whole(raw_smtp):
    script, port = raw_smtp(extensions=["PIPELINING", *(f"X-EXTENSION-{n} {'y' * 200}" for n in range(100))])
    session = session_to(port)
    try:
        assert session.has_extn("x-extension-99") and session.has_extn("pipelining")
        outcome = session.send_message_bytes("a@example.com", ["ok@example.org"], MESSAGE)
    finally:
        close_session(session)
    assert statuses(outcome) == {"ok@example.org": "delivered"}


class Records(logging.Handler):
    """The records of one logger, whatever other tests did to propagation and levels."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_garbage_reply_after_the_data_is_the_duplicate_window_never_a_failure(raw_smtp, queue):
    script, port = raw_smtp(final_reply=b"-1 HANKS\r\n")
    send(queue, b"From: a@example.com\nTo: ok@example.org\nMessage-ID: <hanks@example.com>\n\nhi\n")
    records = Records()
    sender_log = logging.getLogger("mq_transaction.sender")
    level = sender_log.level
    sender_log.addHandler(records)
    sender_log.setLevel(logging.WARNING)
    try:
        result = Sender(settings_for(queue, port)).run()
    finally:
        sender_log.removeHandler(records)
        sender_log.setLevel(level)
    assert (result.failed, result.deferred, result.exit_status) == (0, 1, 75)
    assert len(script.messages) == 1  # the server had the message
    warning = next(r.getMessage() for r in records.records if "may be delivered twice" in r.getMessage())
    assert "unreadable reply '-1 HANKS'" in warning and "<hanks@example.com>" in warning
    # the retry sends the same message again (same Message-ID), and this time it is accepted
    script.final_reply = None
    again = Sender(settings_for(queue, port)).run(flush=True)
    assert (again.delivered, again.exit_status) == (1, 0)
    assert [b"<hanks@example.com>" in m.content for m in script.messages] == [True, True]


def test_a_garbage_reply_after_the_data_defers_every_accepted_recipient(raw_smtp):
    script, port = raw_smtp(final_reply=b"-1 HANKS\r\n", rcpt_replies={"no@example.org": "550 5.1.1 no"})
    session = session_to(port)
    with pytest.raises(ConnectionLost) as lost:
        session.send_message_bytes("a@example.com", ["ok@example.org", "no@example.org"], MESSAGE)
    close_session(session)
    assert lost.value.after_data
    assert statuses(lost.value.outcome) == {"ok@example.org": "deferred", "no@example.org": "failed"}
    assert lost.value.outcome.replies["ok@example.org"] == LOST_AFTER_DATA


def test_a_garbage_reply_before_the_data_keeps_the_message_queued_as_a_server_level_failure(queue):
    def garbage_to_mail(connection):
        connection.sendall(b"220 raw.test\r\n")
        connection.recv(1000)
        connection.sendall(b"250 raw.test\r\n")
        connection.recv(1000)
        connection.sendall(b"2.1.0 Sender OK\r\n")
        connection.recv(1000)

    server = RawServer(garbage_to_mail)
    try:
        send(queue, b"From: a@example.com\nTo: ok@example.org\n\nhi\n")
        result = Sender(settings_for(queue, server.port)).run()
    finally:
        server.stop()
    assert (result.failed, result.deferred, result.delivered, result.exit_status) == (0, 0, 0, 75)
    assert "unreadable reply '2.1.0 Sender OK'" in result.server_error


# -- TLS failures say why, and a refused session ends with QUIT (issue 10 items 8 and 14) ----------


def tls_sink(tmp_path, **certificate):
    """An implicit-TLS aiosmtpd server with a certificate made by ``make_certificate(**certificate)``."""
    cert_file, key_file = make_certificate(tmp_path, **certificate)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return Sink(RecordingHandler(), ssl_context=context), cert_file


@pytest.mark.parametrize(
    ("certificate", "trust_it", "verify_message"),
    [
        ({}, False, "self-signed certificate"),  # an unknown CA
        ({"names": ("mail.example.org",)}, True, "mismatch, certificate is not valid for '127.0.0.1'"),
        ({"expired": True}, True, "certificate has expired"),
    ],
    ids=["unknown-ca", "host-name-mismatch", "expired"],
)
def test_a_certificate_that_does_not_verify_is_named_with_the_reason_the_host_name_and_the_ca_file(
    tmp_path, certificate, trust_it, verify_message
):
    sink, cert_file = tls_sink(tmp_path, **certificate)
    config = ServerConfig(
        host="127.0.0.1", port=sink.port, tls=TLS_SSL, timeout=5, ca_file=cert_file if trust_it else None
    )
    try:
        with pytest.raises(ServerError) as refused:
            open_session(config)
    finally:
        sink.stop()
    message = str(refused.value)
    assert f"TLS failure with 127.0.0.1:{sink.port}: the server's certificate does not verify: " in message
    assert verify_message in message
    assert "host name checked: 127.0.0.1" in message
    trusted = f"trusted: CA file {cert_file}" if trust_it else "trusted: the system's trusted CAs"
    assert trusted in message
    assert sink.received == []


def test_a_starttls_certificate_failure_is_named_the_same_way(tls_auth_sink):
    sink, _ca_file = tls_auth_sink
    config = ServerConfig(host="127.0.0.1", port=sink.port, tls=TLS_STARTTLS, timeout=5)
    with pytest.raises(ServerError) as refused:
        open_session(config)
    assert "does not verify: self-signed certificate" in str(refused.value)
    assert "host name checked: 127.0.0.1; trusted: the system's trusted CAs" in str(refused.value)


def test_a_refusing_greeting_is_answered_with_quit(raw_smtp):
    script, port = raw_smtp(greeting="554 5.3.2 no service for you")
    with pytest.raises(ServerError) as refused:
        session_to(port)
    assert str(refused.value) == "server refused the connection: 554 5.3.2 no service for you"
    assert script.commands == ["QUIT"]


def test_a_server_level_failure_after_ehlo_ends_with_quit(raw_smtp):
    script, port = raw_smtp(extensions=["PIPELINING"])  # no STARTTLS
    with pytest.raises(ServerError) as refused:
        session_to(port, tls=TLS_STARTTLS)
    assert "STARTTLS is required" in str(refused.value)
    assert [command.split()[0].upper() for command in script.commands] == ["EHLO", "QUIT"]


def test_a_refused_mail_from_that_concerns_the_server_ends_the_session_with_quit(raw_smtp, queue):
    script, port = raw_smtp()
    script.mail_reply = "550 5.7.1 relaying denied"
    send(queue, b"From: a@example.com\nTo: ok@example.org\n\nhi\n")
    result = Sender(settings_for(queue, port)).run()
    assert result.exit_status == 75 and "relaying denied" in result.server_error
    assert [command.split()[0].upper() for command in script.commands][-2:] == ["RSET", "QUIT"]


# -- "too many recipients": the rest in new transactions on the same session (issue 12 item 16) ----


def test_recipients_over_the_servers_limit_get_the_message_in_further_transactions(raw_smtp):
    script, port = raw_smtp(max_recipients=2)
    recipients = [f"r{n}@example.org" for n in range(1, 6)]
    session = session_to(port)
    try:
        outcome = session.send_message_bytes("a@example.com", recipients, MESSAGE)
    finally:
        close_session(session)
    assert statuses(outcome) == {address: "delivered" for address in recipients}
    assert [m.recipients for m in script.messages] == [recipients[0:2], recipients[2:4], recipients[4:5]]
    assert all(m.content == MESSAGE for m in script.messages)


def test_only_too_many_recipients_replies_are_tried_again_at_once(raw_smtp):
    script, port = raw_smtp(
        max_recipients=3,
        rcpt_replies={"no@example.org": "550 5.1.1 no such user", "full@example.org": "452 4.2.2 mailbox full"},
    )
    recipients = ["no@example.org", "full@example.org", "ok1@example.org", "ok2@example.org", "ok3@example.org"]
    session = session_to(port)
    try:
        outcome = session.send_message_bytes("a@example.com", recipients, MESSAGE)
    finally:
        close_session(session)
    assert statuses(outcome) == {
        "no@example.org": "failed",
        "full@example.org": "deferred",  # 452 for a full mailbox: the retry schedule, not now
        "ok1@example.org": "delivered",
        "ok2@example.org": "delivered",
        "ok3@example.org": "delivered",
    }
    assert [m.recipients for m in script.messages] == [["ok1@example.org"], ["ok2@example.org", "ok3@example.org"]]


def test_a_transaction_that_delivers_to_nobody_ends_the_splitting(raw_smtp):
    script, port = raw_smtp(max_recipients=0)
    session = session_to(port)
    try:
        outcome = session.send_message_bytes("a@example.com", ["a@example.org", "b@example.org"], MESSAGE)
    finally:
        close_session(session)
    assert statuses(outcome) == {"a@example.org": "deferred", "b@example.org": "deferred"}
    assert sum(command.upper().startswith("MAIL") for command in script.commands) == 1


@pytest.mark.slow
def test_postfix_recipient_limit_is_met_with_further_bdat_transactions(smtp_sink, queue):
    postfix = PostfixSmtpd(proxy_port=smtp_sink.port, smtpd_recipient_limit="2")
    try:
        recipients = [f"r{n}@example.org" for n in range(1, 6)]
        send(queue, b"From: a@example.com\nTo: r1@example.org\n\nmany recipients\n", recipients=recipients)
        result = Sender(settings_for(queue, postfix.port)).run()
    finally:
        postfix.stop()
    assert (result.delivered, result.deferred, result.connections) == (1, 0, 1), postfix.log()
    assert [r.rcpt_tos for r in smtp_sink.received] == [recipients[0:2], recipients[2:4], recipients[4:5]]


@pytest.mark.slow
def test_mq_send_against_a_tarpit_greeting_exits_75_at_its_timeout_with_the_reason(queue):
    import subprocess
    import sys

    server = RawServer(trickle(b"220 tarpit ESMTP, one byte every half second, for ever", 0.5))
    try:
        send(queue, b"From: a@example.com\nTo: ok@example.org\n\nhi\n")
        args = ["--queue-dir", str(queue.path), "--smtp-host", "127.0.0.1", "--smtp-port", str(server.port)]
        done = subprocess.run(
            [sys.executable, "-m", "mq_transaction.cli_send", *args, "--smtp-timeout", "2s"],
            capture_output=True,
            text=True,
            timeout=60,  # without a deadline per reply, mq-send would trickle along for ever
        )
    finally:
        server.stop()
    assert done.returncode == 75, done.stderr
    assert "no complete reply within 2s (mq.smtp_timeout): the server is too slow, or a tarpit" in done.stderr


# -- big messages over slow links: the body and its replies get the data timeout -------------------


@pytest.mark.slow
def test_a_message_that_takes_longer_than_the_command_timeout_to_send_still_goes_out(raw_smtp):
    script, port = raw_smtp(pause_after_354=2.0)  # the server reads nothing for 2 s: a slow link
    message = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 16_000  # 16 MB: more than the socket buffers
    session = session_to(port, timeout=1, data_timeout=30)
    try:
        outcome = session.send_message_bytes("a@example.com", ["ok@example.org"], message)
    finally:
        close_session(session)
    assert statuses(outcome) == {"ok@example.org": "delivered"}
    assert len(script.messages[0].content) == len(message)


@pytest.mark.slow
def test_a_server_that_holds_the_bdat_groups_replies_until_it_has_the_chunk_is_waited_for(raw_smtp):
    def slow_chunk_reader(connection):
        connection.sendall(b"220 raw.test\r\n")
        connection.recv(1000)
        connection.sendall(b"250-raw.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        received = b""
        while not received.endswith(MESSAGE):
            received += connection.recv(65536)
        time.sleep(2)  # as a server still reading a big chunk over a slow link
        connection.sendall(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.0.0 queued\r\n")
        connection.recv(1000)

    server = RawServer(slow_chunk_reader)
    try:
        session = session_to(server.port, timeout=1, data_timeout=30)
        outcome = session.send_message_bytes("a@example.com", ["ok@example.org"], MESSAGE)
        close_session(session)
    finally:
        server.stop()
    assert statuses(outcome) == {"ok@example.org": "delivered"}


def test_a_bdat_group_that_cannot_be_sent_in_full_is_a_plain_lost_connection(raw_smtp):
    def hang_up_after_ehlo(connection):
        connection.sendall(b"220 raw.test\r\n")
        connection.recv(1000)
        connection.sendall(b"250-raw.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()  # a reset: the group cannot go out in full

    server = RawServer(hang_up_after_ehlo)
    try:
        session = session_to(server.port)
        time.sleep(0.2)
        with pytest.raises(ConnectionLost) as lost:
            session.send_message_bytes("a@example.com", ["ok@example.org"], b"x" * 8_000_000 + b"\r\n")
    finally:
        server.stop()
    assert not lost.value.after_data  # the server cannot have the message: tried again at once, no duplicate


# -- the next message's group in the write of this one's final dot (RFC 2920 3.1) ---------------

NEXT = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: the next one\r\n\r\nsecond\r\n"


def two_messages(session, first_to, second_to, second=NEXT):
    """Send MESSAGE with ``second`` offered as the next message, then ``second``: both outcomes."""
    offered = []

    def next_message():
        offered.append(second)
        return "a@example.com", second_to, second

    first = session.send_message_bytes("a@example.com", first_to, MESSAGE, next_message)
    return first, session.send_message_bytes("a@example.com", second_to, second), offered


def test_the_final_dot_and_the_next_messages_mail_rcpt_and_data_go_in_one_write(raw_smtp, caplog):
    script, port = raw_smtp(extensions=["PIPELINING", "SIZE 1000000"])
    session = session_to(port)
    try:
        with caplog.at_level(logging.DEBUG, logger="mq_transaction.smtp"):
            first, second, _ = two_messages(session, ["ok@example.org"], ["b@example.org", "c@example.org"])
    finally:
        close_session(session)
    assert (
        wire_format(MESSAGE)
        + f".\r\nMAIL FROM:<a@example.com> SIZE={len(NEXT)}\r\nRCPT TO:<b@example.org>\r\n"
        "RCPT TO:<c@example.org>\r\nDATA\r\n".encode()
        in script.chunks
    )
    assert statuses(first) == {"ok@example.org": "delivered"}
    assert statuses(second) == {"b@example.org": "delivered", "c@example.org": "delivered"}
    assert [(m.recipients, m.content) for m in script.messages] == [
        (["ok@example.org"], MESSAGE),
        (["b@example.org", "c@example.org"], NEXT),
    ]
    assert session.begun is None
    # the dialog log has every line, in the order it went out
    dialog = [r.getMessage().split("] ", 1)[1] for r in caplog.records if r.name == "mq_transaction.smtp"]
    body = dialog.index(f"C: [message body, {len(wire_format(MESSAGE)) + 3} bytes]")
    assert dialog[body + 1 : body + 5] == [
        f"C: MAIL FROM:<a@example.com> SIZE={len(NEXT)}",
        "C: RCPT TO:<b@example.org>",
        "C: RCPT TO:<c@example.org>",
        "C: DATA",
    ]
    assert dialog[body + 5] == "S: 250 2.0.0 queued"


def test_the_second_message_of_a_group_records_a_refused_and_a_deferred_recipient_each_with_its_own_reply(
    raw_smtp,
):
    script, port = raw_smtp(
        rcpt_replies={"no@example.org": "550 5.1.1 no such user", "later@example.org": "451 4.2.0 mailbox busy"}
    )
    session = session_to(port)
    try:
        first, second, _ = two_messages(
            session, ["ok@example.org"], ["b@example.org", "no@example.org", "later@example.org"]
        )
    finally:
        close_session(session)
    assert any(chunk.startswith(wire_format(MESSAGE) + b".\r\nMAIL FROM:") for chunk in script.chunks)
    assert statuses(first) == {"ok@example.org": "delivered"}
    assert statuses(second) == {
        "b@example.org": "delivered",
        "no@example.org": "failed",
        "later@example.org": "deferred",
    }
    assert str(second.replies["no@example.org"]) == "550 5.1.1 no such user"
    assert str(second.replies["later@example.org"]) == "451 4.2.0 mailbox busy"
    assert [m.recipients for m in script.messages] == [["ok@example.org"], ["b@example.org"]]


def test_a_server_that_hangs_up_after_the_first_messages_250_loses_only_the_begun_transaction(raw_smtp):
    script, port = raw_smtp(close_after_messages=1)
    session = session_to(port)
    try:
        first = session.send_message_bytes(
            "a@example.com", ["ok@example.org"], MESSAGE, lambda: ("a@example.com", ["b@example.org"], NEXT)
        )
        assert session.begun is not None
        with pytest.raises(ConnectionLost) as lost:
            session.send_message_bytes("a@example.com", ["b@example.org"], NEXT)
    finally:
        close_session(session)
    assert statuses(first) == {"ok@example.org": "delivered"}  # recorded before the next one's replies are read
    assert not lost.value.after_data  # the next message's body never went: tried again at once, no duplicate
    assert [m.content for m in script.messages] == [MESSAGE]


def test_a_421_to_the_next_messages_mail_from_ends_the_session_and_leaves_the_first_delivered(raw_smtp):
    script, port = raw_smtp(mail_replies={2: "421 4.3.2 shutting down"})
    session = session_to(port)
    try:
        first = session.send_message_bytes(
            "a@example.com", ["ok@example.org"], MESSAGE, lambda: ("a@example.com", ["b@example.org"], NEXT)
        )
        with pytest.raises(ConnectionLost) as lost:
            session.send_message_bytes("a@example.com", ["b@example.org"], NEXT)
    finally:
        close_session(session)
    assert statuses(first) == {"ok@example.org": "delivered"}
    assert not lost.value.after_data and lost.value.reply.code == 421
    assert session.sock is None
    assert [m.content for m in script.messages] == [MESSAGE]


def test_a_refused_end_of_data_before_a_begun_transaction_sends_no_rset(raw_smtp):
    script, port = raw_smtp(data_replies={1: "554 5.7.1 looks like spam"})
    session = session_to(port)
    try:
        first, second, _ = two_messages(session, ["ok@example.org"], ["b@example.org"])
    finally:
        close_session(session)
    assert str(first.replies["ok@example.org"]) == "554 5.7.1 looks like spam"
    assert statuses(second) == {"b@example.org": "delivered"}
    assert "RSET" not in [command.upper() for command in script.commands]  # it would reset the next one
    assert [m.content for m in script.messages] == [NEXT]


def test_a_lost_connection_after_the_first_dot_is_its_duplicate_window_and_the_next_is_untouched(raw_smtp):
    def hang_up_after_the_dot(connection):
        connection.sendall(b"220 raw.test\r\n")
        connection.recv(1000)
        connection.sendall(b"250-raw.test\r\n250 PIPELINING\r\n")
        connection.recv(65536)
        connection.sendall(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 go ahead\r\n")
        connection.recv(65536)  # the body, its dot and the next group: then the server is gone

    server = RawServer(hang_up_after_the_dot)
    try:
        session = session_to(server.port)
        with pytest.raises(ConnectionLost) as lost:
            session.send_message_bytes(
                "a@example.com", ["ok@example.org"], MESSAGE, lambda: ("a@example.com", ["b@example.org"], NEXT)
            )
    finally:
        server.stop()
    assert lost.value.after_data
    assert "may have been delivered" in str(lost.value.outcome.replies["ok@example.org"])
    assert session.begun is None and session.sock is None


def test_closing_a_session_with_a_begun_transaction_sends_no_quit_and_delivers_nothing_more(raw_smtp, caplog):
    script, port = raw_smtp()
    session = session_to(port)
    with caplog.at_level(logging.DEBUG, logger="mq_transaction.smtp"):
        session.send_message_bytes(
            "a@example.com", ["ok@example.org"], MESSAGE, lambda: ("a@example.com", ["b@example.org"], NEXT)
        )
        close_session(session)
    deadline = time.monotonic() + 5
    while script.mails < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert script.mails == 2  # the next group did go out...
    assert [m.content for m in script.messages] == [MESSAGE]  # ...and its message was never delivered
    assert "QUIT" not in [command.upper() for command in script.commands]
    assert any("abandoned" in r.getMessage() for r in caplog.records)


def test_the_next_message_waits_for_recipients_that_need_a_transaction_of_their_own(raw_smtp):
    script, port = raw_smtp(max_recipients=1)
    session = session_to(port)
    try:
        first, second, _ = two_messages(session, ["ok@example.org", "ok2@example.org"], ["b@example.org"])
    finally:
        close_session(session)
    body = wire_format(MESSAGE) + b".\r\n"
    # the "too many recipients" go first, in a transaction of their own, which the next message follows
    bodies = [chunk for chunk in script.chunks if chunk.startswith(body)]
    assert bodies[0] == body and bodies[1].startswith(body + b"MAIL FROM:<a@example.com>") and len(bodies) == 2
    assert statuses(first) == {"ok@example.org": "delivered", "ok2@example.org": "delivered"}
    assert statuses(second) == {"b@example.org": "delivered"}
    assert [m.recipients for m in script.messages] == [["ok@example.org"], ["ok2@example.org"], ["b@example.org"]]


def test_without_pipelining_or_with_chunking_no_next_message_is_asked_for(raw_smtp):
    for extensions in (["8BITMIME"], ["PIPELINING", "CHUNKING"]):
        script, port = raw_smtp(extensions=extensions)
        session = session_to(port)
        try:
            _first, second, offered = two_messages(session, ["ok@example.org"], ["b@example.org"])
        finally:
            close_session(session)
        assert offered == [] and statuses(second) == {"b@example.org": "delivered"}
        assert len(script.messages) == 2


def test_a_call_for_another_message_than_the_begun_one_is_refused_and_ends_the_session(raw_smtp):
    script, port = raw_smtp()
    session = session_to(port)
    try:
        session.send_message_bytes(
            "a@example.com", ["ok@example.org"], MESSAGE, lambda: ("a@example.com", ["b@example.org"], NEXT)
        )
        with pytest.raises(RuntimeError):
            session.send_message_bytes("a@example.com", ["c@example.org"], NEXT)
    finally:
        close_session(session)
    assert session.sock is None
    assert [m.content for m in script.messages] == [MESSAGE]
