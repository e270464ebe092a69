"""Our SMTP client: the standard library's ``smtplib`` extended, not copied.

``DialogSMTP`` and ``DialogSMTP_SSL`` are plain subclasses of ``smtplib.SMTP`` and
``smtplib.SMTP_SSL`` that override the few methods carrying the dialog (``send``,
``getreply``) to log every command and reply line to the logger ``mq_transaction.smtp``
(AUTH payloads always redacted, message bodies logged by size unless asked), and add
:meth:`DialogSMTP.send_message_bytes`, which reports every recipient's own outcome,
pipelines when the server allows, and waits long after the final dot.

The sender needs four names: :func:`open_session`, ``session.send_message_bytes()``,
:func:`close_session`, and the exceptions :class:`ServerError`/:class:`ConnectionLost`.

Beside it, :mod:`mq_transaction.smtp_config` says which server to use and how
(:class:`~mq_transaction.smtp_config.ServerConfig`, the TLS modes), and
:mod:`mq_transaction.smtp_wire` makes the bytes and addresses a transaction sends. Their
names that were defined here first are still importable from here.
"""

from __future__ import annotations

import itertools
import logging
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _socket import _Address

    from _typeshed import ReadableBuffer

from .replies import Reply, is_too_many_recipients, mail_from_concerns_message, recipient_status
from .smtp_config import TLS_MODES, TLS_NONE, TLS_SSL, TLS_STARTTLS, ServerConfig, default_helo_name
from .smtp_wire import ascii_envelope, crlf_lines, needs_smtputf8, wire_format
from .states import RecipientStatus

# The TLS modes, ServerConfig, default_helo_name and the wire form were defined here first (now in
# smtp_config and smtp_wire): they are still importable from here.
__all__ = [
    "LOST_AFTER_DATA",
    "MAX_REPLY_BYTES",
    "TLS_MODES",
    "TLS_NONE",
    "TLS_SSL",
    "TLS_STARTTLS",
    "BadReply",
    "ConnectionLost",
    "DialogSMTP",
    "DialogSMTP_SSL",
    "NextMessage",
    "ServerConfig",
    "ServerError",
    "TransactionReplies",
    "close_session",
    "crlf_lines",
    "default_helo_name",
    "needs_smtputf8",
    "open_session",
    "wire_format",
]

log = logging.getLogger("mq_transaction.smtp")

#: The most bytes one reply may have, all its lines together: far above any real reply (an
#: EHLO reply is well under 1 KiB), low enough that a server streaming an endless reply
#: cannot make the sender hold much memory or wait long.
MAX_REPLY_BYTES = 64 * 1024

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|\r?\n|$)")
_connection_numbers = itertools.count(1)

#: Every recipient whose message was sent but whose final reply never came (the duplicate window).
LOST_AFTER_DATA = Reply(451, "4.4.2 connection lost after the end of data; the message may have been delivered")


class ServerError(Exception):
    """The server (or our configuration for it) cannot be used now; no message is at fault.

    ``reply`` is the server's reply when there was one.
    """

    def __init__(self, description: str, reply: Reply | None = None) -> None:
        self.description = description
        self.reply = reply
        super().__init__(f"{description}: {reply}" if reply else description)


class BadReply(smtplib.SMTPServerDisconnected):
    """The server's reply cannot be used: not complete within the deadline, too long, or not SMTP.

    The connection is closed: what comes next on it cannot be trusted. Everywhere it is
    handled as a lost connection (after the message: the duplicate window).
    """


class ConnectionLost(ServerError):
    """The server closed the session (421 or a dropped connection) during a transaction.

    ``after_data`` is true when the message was sent in full and the final reply never
    came: the server may have accepted it (the duplicate window).
    """

    def __init__(
        self,
        description: str,
        reply: Reply | None = None,
        after_data: bool = False,
        outcome: TransactionReplies | None = None,
    ) -> None:
        super().__init__(description, reply)
        self.after_data = after_data
        self.outcome = outcome  # after_data: every recipient's reply, the accepted ones 4xx


@dataclass
class TransactionReplies:
    """What one SMTP transaction did: each recipient's reply, and message-level facts."""

    replies: dict[str, Reply] = field(default_factory=dict)
    #: each recipient's reply to RCPT TO (empty when MAIL FROM was refused); the sender's
    #: relay-refusal rule reads these, not the replies to DATA
    rcpt_replies: dict[str, Reply] = field(default_factory=dict)

    def status(self, address: str) -> RecipientStatus:
        """``delivered``, ``deferred`` or ``failed`` for one recipient."""
        return recipient_status(self.replies[address])


#: What :meth:`DialogSMTP.send_message_bytes` calls when it is about to send a message's body:
#: the next message, already claimed, as ``(sender, recipients, message)``, or None.
NextMessage = Callable[[], "tuple[str, list[str], bytes] | None"]


@dataclass
class _Envelope:
    """One message as a transaction sends it: its commands, its wire bytes, and who is tried."""

    sender: str
    recipients: list[str]  # as asked
    message: bytes
    tried: list[str]  # those whose RCPT TO goes out (an address with no ASCII form is refused here)
    outcome: TransactionReplies  # the replies settled before sending (those refusals)
    wire: bytes
    mail: str
    rcpts: list[str]

    def is_for(self, sender: str, recipients: list[str], message: bytes) -> bool:
        return message is self.message and sender == self.sender and recipients == self.recipients


class _PartlySent(OSError):
    """A write failed after ``sent`` of its bytes went out."""

    def __init__(self, sent: int, error: OSError) -> None:
        super().__init__(f"{error} (after {sent} bytes)")
        self.sent = sent


def _settle(outcome: TransactionReplies, recipients: list[str], reply: Reply) -> TransactionReplies:
    """Give ``reply`` to each of ``recipients``."""
    for address in recipients:
        outcome.replies[address] = reply
    return outcome


def _too_many_for_now(reply: Reply) -> bool:
    """A RCPT refused only because this transaction has too many recipients (452 4.5.3, 552 5.5.3)."""
    if reply.code == 452:
        return reply.enhanced == "4.5.3" or "too many recipients" in reply.text.lower()
    return is_too_many_recipients(reply)


class DialogSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` with the dialog log and per-recipient delivery.

    ``host`` and ``port`` are connected at once, as smtplib does (its certificate checks use
    ``host``); a greeting other than ``220`` raises ``smtplib.SMTPConnectError``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        local_hostname: str,
        timeout: float,
        data_timeout: float = 600.0,
        log_bodies: bool = False,
        **smtplib_options: Any,
    ) -> None:
        # Set before smtplib connects: the greeting is the first line of the dialog log.
        self.data_timeout = data_timeout
        self.log_bodies = log_bodies
        self.number = next(_connection_numbers)
        self.peer = f"{host}:{port}"
        self._in_auth = False
        self._reply_timeout: float | None = None  # None: the command timeout
        self._buffer = b""
        self._buffered_sock: socket.socket | None = None
        #: The next message's transaction, begun in the write that ended the previous one's
        #: body (RFC 2920 3.1): its commands are out, their replies not read yet.
        self.begun: _Envelope | None = None
        super().__init__(host, port, local_hostname=local_hostname, timeout=timeout, **smtplib_options)

    # -- the dialog log ----------------------------------------------------------------

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: _Address | None = None
    ) -> tuple[int, bytes]:
        """smtplib's connect; after a refusing greeting other than 421, QUIT before smtplib closes (RFC 5321 3.1)."""
        code, text = super().connect(host, port, source_address)
        if code != 220 and code != 421:
            try:
                self.docmd("QUIT")
            except (smtplib.SMTPException, OSError):
                pass  # the server went first: nothing to be polite to
        return code, text

    def close(self) -> None:
        """Close the connection (smtplib's close); a begun transaction ends with it, undelivered."""
        self.begun = None
        super().close()

    def _log_line(self, direction: str, text: str) -> None:
        log.debug("[%s #%d] %s %s", self.peer, self.number, direction, text)

    def send(self, s: ReadableBuffer | str) -> None:
        """Send commands smtplib built (``ehlo``, ``AUTH``, ``rset``...), logging each line."""
        text = s if isinstance(s, str) else bytes(s).decode("utf-8", "replace")
        for line in text.split("\r\n")[:-1]:
            redacted = self._redact(line)  # keeps the AUTH state right even when not logging
            if log.isEnabledFor(logging.DEBUG):
                self._log_line("C:", redacted)
        super().send(s)

    def _send_group(self, commands: list[str], body: bytes = b"", then: list[str] | None = None) -> None:
        """Send ``commands``, ``body`` and the commands ``then`` in one write, logging the commands and the body's size.

        With ``then``, a failed write raises :class:`_PartlySent`, which tells how many bytes went out.
        """
        if log.isEnabledFor(logging.DEBUG):
            for command in commands:
                self._log_line("C:", command)
            if body:
                if self.log_bodies:
                    for line in body.decode("utf-8", "replace").split("\r\n")[:-1]:
                        self._log_line("C:", line)
                else:
                    self._log_line("C:", f"[message body, {len(body)} bytes]")
            for command in then or ():
                self._log_line("C:", command)
        data = "".join(f"{command}\r\n" for command in commands).encode(self.command_encoding) + body
        if then:
            data += "".join(f"{command}\r\n" for command in then).encode(self.command_encoding)
        if not body or self.sock is None:
            super().send(data)  # smtplib's send: the lines are logged above, once
            return
        # The socket timeout bounds a whole sendall(): a big message over a slow link gets
        # the data timeout, not the command timeout, or it could never be sent.
        self.sock.settimeout(max(self.timeout, self.data_timeout))
        try:
            if then:
                self._send_counting(data)
            else:
                super().send(data)
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.timeout)

    def _send_counting(self, data: bytes) -> None:
        """``sendall`` that says, when it fails, how much of ``data`` went out (:class:`_PartlySent`)."""
        assert self.sock is not None
        view, sent = memoryview(data), 0
        try:
            while sent < len(data):
                sent += self.sock.send(view[sent:])
        except OSError as exc:
            self.close()
            raise _PartlySent(sent, exc) from exc

    def _redact(self, line: str) -> str:
        if line[:5].upper() == "AUTH ":
            self._in_auth = True
            mechanism = line[5:].split(" ", 1)[0]
            return f"AUTH {mechanism} [redacted]" if " " in line[5:] else line
        if self._in_auth:
            return "[redacted]"
        return line

    def getreply(self) -> tuple[int, bytes]:
        """Read one whole reply within the reply deadline, logging each line; smtplib's contract.

        The deadline bounds the whole reply, not each read: ``timeout`` for a command,
        ``data_timeout`` for the reply after the message. A reply that misses it, that is
        longer than :data:`MAX_REPLY_BYTES`, or that is not an SMTP reply closes the
        connection and raises :class:`BadReply` (an ``SMTPServerDisconnected``).
        """
        if self._reply_timeout is not None:
            limit, setting = self._reply_timeout, "mq.smtp_data_timeout"
        else:
            limit, setting = self.timeout, "mq.smtp_timeout"
        deadline = time.monotonic() + limit if isinstance(limit, (int, float)) else None
        late = f"no complete reply within {limit:g}s ({setting}): the server is too slow, or a tarpit"
        texts = []
        size = 0
        while True:
            line = self._read_line(deadline, late, MAX_REPLY_BYTES - size)
            size += len(line)
            shown = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if log.isEnabledFor(logging.DEBUG):
                self._log_line("S:", shown)
            match = _REPLY_LINE.match(line)
            if match is None:
                self.close()
                raise BadReply(f"unreadable reply {shown[:80]!r}")
            texts.append(line[4:].strip(b" \t\r\n"))
            if match.group(2) != b"-":
                break
        code = int(match.group(1))
        if code != 334:
            self._in_auth = False
        return code, b"\n".join(texts)

    def _read_line(self, deadline: float | None, late: str, room: int) -> bytes:
        """One line from the socket, buffered here so that a deadline can bound the whole reply."""
        if self._buffered_sock is not self.sock:
            self._buffer, self._buffered_sock = b"", self.sock  # a new socket (STARTTLS) starts empty
        while True:
            end = self._buffer.find(b"\n", 0, room)
            if end >= 0:
                line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
                return line
            if len(self._buffer) >= room:
                self.close()
                raise BadReply(f"reply longer than {MAX_REPLY_BYTES} bytes")
            if self.sock is None:
                raise smtplib.SMTPServerDisconnected("please run connect() first")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self.close()
                raise BadReply(late)
            try:
                self.sock.settimeout(remaining)
                data = self.sock.recv(65536)
            except TimeoutError:
                self.close()
                raise BadReply(late) from None
            except OSError as exc:
                self.close()
                raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {exc}") from None
            finally:
                if self.sock is not None:
                    self.sock.settimeout(self.timeout)
            if not data:
                self.close()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            self._buffer += data

    def _reply(self) -> Reply:
        code, text = self.getreply()
        return Reply(code, text.decode("utf-8", "replace"))

    # -- one message ---------------------------------------------------------------------

    def send_message_bytes(
        self, sender: str, recipients: list[str], message: bytes, next_message: NextMessage | None = None
    ) -> TransactionReplies:
        """Send one message to ``recipients`` and return every recipient's reply.

        Recipients refused as "too many recipients" (``452 4.5.3``, ``552 5.5.3``) in a
        transaction that delivered to someone are sent the message again at once, in a new
        transaction on the same session (RFC 5321 4.5.3.1.10), until all are done or a
        transaction makes no progress. When such a later transaction cannot be completed
        before its data (server refusal, lost session), the recipients it was for keep their
        "too many recipients" reply (deferred) and the earlier results stand: nothing is
        sent twice for it.

        ``next_message`` (with PIPELINING, without CHUNKING) is called when the body is about
        to go: the next message of this session, already claimed by the caller, or None. Its
        MAIL FROM, RCPT TOs and DATA then go in the same write as this body and its final dot
        (RFC 2920 3.1: the message content may be the first "command" of a group), so a
        message costs one round trip. Only this message's final reply is read here: the next
        call, for that message, reads the rest (it must come next, with the same arguments;
        :attr:`begun` holds it). Nothing about the next transaction can change this one's
        result, which the caller records before the next call.

        Raises :class:`ServerError` when the server refuses something that is not about
        this message (421, a 5xx to MAIL FROM about the server), and
        :class:`ConnectionLost` when the session ends mid-transaction.
        """
        outcome = self._transaction(sender, recipients, message, next_message)
        batch = recipients
        while self.begun is None:  # once the next message's group is out, this session is its
            delivered = [a for a in batch if a in outcome.replies and outcome.status(a) == RecipientStatus.DELIVERED]
            batch = [a for a in recipients if a in outcome.replies and _too_many_for_now(outcome.replies[a])]
            if not batch or not delivered:
                return outcome
            try:
                more = self._transaction(sender, batch, message, next_message)
            except ConnectionLost as exc:
                if not exc.after_data or exc.outcome is None:
                    self.close()
                    return outcome  # the batch keeps its "too many recipients" reply
                outcome.replies.update(exc.outcome.replies)
                exc.outcome = outcome
                raise
            except ServerError:
                return outcome  # the next message meets the same refusal, with nothing delivered to lose
            outcome.replies.update(more.replies)
        return outcome

    def _prepare(self, sender: str, recipients: list[str], message: bytes, chunking: bool) -> _Envelope:
        """The commands and the wire bytes of one transaction (ESMTP options, ASCII forms)."""
        outcome = TransactionReplies()
        wire = crlf_lines(message) if chunking else wire_format(message)
        options = []
        if self.has_extn("size"):
            options.append(f"SIZE={len(wire)}")
        wire_address: dict[str, str] = {}  # envelope address -> its ASCII form, without SMTPUTF8
        tried = recipients
        if needs_smtputf8(sender, recipients):
            if self.has_extn("smtputf8"):
                options.append("SMTPUTF8")
                self.command_encoding = "utf-8"
            else:
                tried = ascii_envelope(sender, recipients, outcome.replies, wire_address)
        if not message.isascii() and self.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        mail = f"MAIL FROM:<{wire_address.get(sender, sender)}>{''.join(' ' + o for o in options)}"
        rcpts = [f"RCPT TO:<{wire_address.get(address, address)}>" for address in tried]
        return _Envelope(sender, recipients, message, tried, outcome, wire, mail, rcpts)

    def _transaction(
        self, sender: str, recipients: list[str], message: bytes, next_message: NextMessage | None = None
    ) -> TransactionReplies:
        """One SMTP mail transaction: the message to ``recipients``, every recipient's reply.

        Without PIPELINING, one command at a time. With PIPELINING (RFC 2920), MAIL FROM,
        every RCPT TO and DATA go in one write, and the body follows the 354 (with the next
        message's group, see :meth:`send_message_bytes`). With PIPELINING and CHUNKING
        (RFC 3030), ``BDAT <size> LAST`` and the message go in that same write. Either way
        each recipient gets its own reply.

        Raises :class:`ServerError` when the server refuses something that is not about
        this message (421, a 5xx to MAIL FROM about the server), and
        :class:`ConnectionLost` when the session ends mid-transaction.
        """
        begun, self.begun = self.begun, None
        if begun is not None and not begun.is_for(sender, recipients, message):
            self.close()  # the begun transaction cannot be finished nor taken back: end it undelivered
            raise RuntimeError("a transaction was begun for another message than the one asked for")
        pipelining = self.has_extn("pipelining")
        chunking = pipelining and self.has_extn("chunking")
        envelope = begun or self._prepare(sender, recipients, message, chunking)
        outcome, recipients, mail, rcpts = envelope.outcome, envelope.tried, envelope.mail, envelope.rcpts
        if not recipients:
            return outcome
        if chunking:
            return self._send_chunked(outcome, mail, rcpts, recipients, envelope.wire)
        follow: _Envelope | None = None
        body = b""
        try:
            if pipelining:
                if begun is None:
                    self._send_group([mail, *rcpts, "DATA"])
                mail_reply = self._command_reply()
                rcpt_replies = [self._command_reply() for _ in rcpts]
                data_reply = self._command_reply()
            else:
                self._send_group([mail])
                mail_reply = self._command_reply()
                rcpt_replies = []
                if mail_reply.code < 300:
                    for command in rcpts:
                        self._send_group([command])
                        rcpt_replies.append(self._command_reply())
                data_reply = None
            accepted = self._envelope(outcome, recipients, mail_reply, rcpt_replies)
            if not pipelining and accepted:
                self._send_group(["DATA"])
                data_reply = self._command_reply()
            if data_reply is not None and data_reply.code == 354 and not accepted:
                # RFC 2920 asks the server to refuse DATA when no RCPT was accepted; one that
                # does not gets an empty message, which has nobody to go to.
                self._send_group([], b".\r\n")
                self._command_reply()
            if not accepted:
                return self._refused(outcome, recipients, mail_reply)
            assert data_reply is not None
            if data_reply.code != 354:
                self._reset()
                return _settle(outcome, accepted, data_reply)
            body = envelope.wire + b".\r\n"
            if pipelining and next_message is not None and not any(map(_too_many_for_now, rcpt_replies)):
                follow = self._next_envelope(next_message)
            if follow is None:
                self._send_group([], body)
            else:
                self._send_group([], body, then=[follow.mail, *follow.rcpts, "DATA"])
        except _PartlySent as exc:
            if exc.sent < len(body):
                raise ConnectionLost(f"connection lost: {exc}") from exc
            raise self._lost_after_data(outcome, accepted, exc) from exc  # the final dot went out
        except smtplib.SMTPServerDisconnected as exc:
            raise ConnectionLost(f"connection lost: {exc}") from exc
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"connection lost: {exc}") from exc
        # The message is out: only now a lost connection may mean it was delivered.
        self.begun = follow
        return self._final_reply(outcome, accepted)

    def _next_envelope(self, next_message: NextMessage) -> _Envelope | None:
        """The next message's envelope, to begin its transaction in this write; None if there is none to send."""
        following = next_message()
        if following is None:
            return None
        envelope = self._prepare(*following, chunking=False)
        return envelope if envelope.tried else None

    def _send_chunked(
        self, outcome: TransactionReplies, mail: str, rcpts: list[str], recipients: list[str], body: bytes
    ) -> TransactionReplies:
        """MAIL, every RCPT and ``BDAT <size> LAST`` with the message, in one write."""
        try:
            self._send_group([mail, *rcpts, f"BDAT {len(body)} LAST"], body)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()  # not all of the chunk went out: the server cannot take the message
            raise ConnectionLost(f"connection lost while sending the message: {exc}") from exc
        # The whole message is out, and a server may hold the group's replies until it has read
        # the chunk (Postfix does): each of them gets the data deadline, and from here a lost
        # connection may mean the server took the message (the duplicate window).
        self._reply_timeout = self.data_timeout
        try:
            try:
                mail_reply = self._command_reply()
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self.close()
                raise self._lost_after_data(outcome, recipients, exc) from exc
            try:
                rcpt_replies = [self._command_reply() for _ in rcpts]
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self.close()
                if mail_reply.code >= 300:
                    raise ConnectionLost(f"connection lost: {exc}") from exc
                raise self._lost_after_data(outcome, recipients, exc) from exc
            accepted = self._envelope(outcome, recipients, mail_reply, rcpt_replies)
            if not accepted:
                try:
                    self._command_reply()  # the expected 503/554 to BDAT, keeping the dialog in step
                except (smtplib.SMTPServerDisconnected, OSError) as exc:
                    self.close()
                    raise ConnectionLost(f"connection lost: {exc}") from exc
        finally:
            self._reply_timeout = None
        if not accepted:
            return self._refused(outcome, recipients, mail_reply)
        return self._final_reply(outcome, accepted)

    def _command_reply(self) -> Reply:
        """The reply to one command; a 421 ends the session (:class:`ConnectionLost`)."""
        reply = self._reply()
        if reply.code == 421:
            self.close()
            raise ConnectionLost("server closed the session", reply)
        return reply

    def _envelope(
        self, outcome: TransactionReplies, recipients: list[str], mail: Reply, rcpts: list[Reply]
    ) -> list[str]:
        """Record the RCPT replies (when MAIL FROM was accepted); return the accepted recipients."""
        if mail.code >= 300:
            return []
        for address, reply in zip(recipients, rcpts, strict=True):
            outcome.replies[address] = reply
        outcome.rcpt_replies = dict(outcome.replies)
        return [address for address in recipients if outcome.status(address) == RecipientStatus.DELIVERED]

    def _refused(self, outcome: TransactionReplies, recipients: list[str], mail: Reply) -> TransactionReplies:
        """End a transaction in which nobody was accepted: RSET, and settle MAIL FROM's refusal."""
        self._reset()
        if mail.code < 300:
            return outcome  # every RCPT has its own refusal
        if mail.code >= 500 and not mail_from_concerns_message(mail):
            raise ServerError("server refused MAIL FROM", mail)
        return _settle(outcome, recipients, mail)

    def _final_reply(self, outcome: TransactionReplies, accepted: list[str]) -> TransactionReplies:
        """Wait for the reply that settles the message (after the dot, or to ``BDAT ... LAST``)."""
        self._reply_timeout = self.data_timeout
        try:
            reply = self._reply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # Lost, too slow, too long or unreadable: nobody knows whether the server took it.
            self.close()
            raise self._lost_after_data(outcome, accepted, exc) from exc
        finally:
            self._reply_timeout = None
        if reply.code == 421:
            self.close()
            raise ConnectionLost(
                "server closed the session after the end of data",
                reply,
                after_data=True,
                outcome=_settle(outcome, accepted, reply),
            )
        _settle(outcome, accepted, reply)
        if reply.code >= 300 and self.begun is None:
            self._reset()  # (the end of data ends the transaction anyway: no RSET before a begun one)
        return outcome

    def _lost_after_data(self, outcome: TransactionReplies, recipients: list[str], exc: Exception) -> ConnectionLost:
        """The message was sent and its fate is unknown: every recipient not refused yet is deferred."""
        unknown = [
            address
            for address in recipients
            if address not in outcome.replies or outcome.status(address) == RecipientStatus.DELIVERED
        ]
        return ConnectionLost(
            f"no reply after the end of data: {exc}",
            after_data=True,
            outcome=_settle(outcome, unknown, LOST_AFTER_DATA),
        )

    def _reset(self) -> None:
        """RSET after a failed transaction, so the next message starts clean."""
        code, _text = self.rset()
        if code == 421:
            raise ConnectionLost("server closed the session", Reply(code))


class DialogSMTP_SSL(DialogSMTP, smtplib.SMTP_SSL):  # noqa: N801 - mirrors smtplib's name
    """``smtplib.SMTP_SSL`` (implicit TLS, port 465) with the dialog log and per-recipient delivery.

    Takes ``context=`` (an ``ssl.SSLContext``) beside :class:`DialogSMTP`'s arguments.
    """


def open_session(config: ServerConfig) -> DialogSMTP:
    """Connect, greet, secure and authenticate; return the ready session.

    Raises :class:`ServerError` for anything that makes the server unusable now
    (refused connection, timeout, 421/5xx greeting, TLS failure, missing STARTTLS,
    authentication failure).
    """
    peer = f"{config.host}:{config.port}"
    session: DialogSMTP | None = None
    options: dict[str, Any] = {
        "local_hostname": config.helo or default_helo_name(),
        "timeout": config.timeout,
        "data_timeout": config.data_timeout,
        "log_bodies": config.log_bodies,
    }
    try:
        try:
            if config.tls == TLS_SSL:
                session = DialogSMTP_SSL(config.host, config.port, context=config.tls_context(), **options)
            else:
                session = DialogSMTP(config.host, config.port, **options)
        except smtplib.SMTPConnectError as exc:
            raise ServerError("server refused the connection", _reply_of(exc)) from None
        _ehlo(session)
        if config.tls == TLS_STARTTLS:
            if not session.has_extn("starttls"):
                raise ServerError("STARTTLS is required (mq.smtp_tls = starttls) but the server does not offer it")
            code, text = session.starttls(context=config.tls_context())
            if code != 220:
                raise ServerError("server refused STARTTLS", Reply(code, text.decode("utf-8", "replace")))
            _ehlo(session)
        if config.username:
            if not session.has_extn("auth"):
                raise ServerError("authentication is configured but the server does not offer AUTH")
            try:
                session.login(config.username, config.password or "")
            except smtplib.SMTPAuthenticationError as exc:
                raise ServerError("authentication failed", _reply_of(exc)) from None
            except smtplib.SMTPException as exc:
                raise ServerError(f"authentication failed: {exc}") from None
        return session
    except ServerError:
        close_session(session)  # QUIT first where the connection still works
        raise
    except ssl.SSLCertVerificationError as exc:
        if session is not None:
            session.close()
        raise ServerError(
            f"TLS failure with {peer}: the server's certificate does not verify: {exc.verify_message} "
            f"({config.tls_checks()}); check mq.smtp_host, and mq.smtp_ca_file for a private CA"
        ) from None
    except ssl.SSLError as exc:
        if session is not None:
            session.close()
        raise ServerError(f"TLS failure with {peer}: {exc.reason or exc} ({config.tls_checks()})") from None
    except (smtplib.SMTPException, OSError) as exc:
        if session is not None:
            session.close()
        raise ServerError(f"cannot talk to {peer}: {exc}") from None


def _reply_of(exc: smtplib.SMTPResponseException) -> Reply:
    error = exc.smtp_error
    return Reply(exc.smtp_code, error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error))


def _ehlo(session: DialogSMTP) -> None:
    code, text = session.ehlo()
    if code == 250:
        return
    if code == 421:
        raise ServerError("server closed the session at EHLO", Reply(code, text.decode("utf-8", "replace")))
    code, text = session.helo()
    if code != 250:
        raise ServerError("server refused EHLO and HELO", Reply(code, text.decode("utf-8", "replace")))


def close_session(session: smtplib.SMTP | None) -> None:
    """QUIT politely; close the socket whatever happens.

    A session with a begun transaction (:attr:`DialogSMTP.begun`) is closed without QUIT:
    the server may be reading its message, and closing before a final dot is the one way to
    end it undelivered.
    """
    if session is None:
        return
    if isinstance(session, DialogSMTP) and session.begun is not None:
        if log.isEnabledFor(logging.DEBUG):
            session._log_line("C:", "[connection closed: the begun transaction is abandoned, undelivered]")
        session.close()
        return
    try:
        if session.sock:
            session.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        session.close()
