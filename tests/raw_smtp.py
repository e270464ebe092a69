"""Small raw-socket SMTP servers on 127.0.0.1: they record the bytes exactly as they arrive, and misbehave on request.

aiosmtpd parses and hides what the client wrote (how commands were grouped into writes,
the raw ``RCPT TO`` line); these servers keep every ``recv()`` as it came, so a test can
check that MAIL, the RCPTs and DATA travelled in one write.

``RawServer(serve)`` runs ``serve(connection)`` in a thread for each client; ``ScriptedSMTP``
is a ``serve`` that speaks enough SMTP (EHLO, MAIL, RCPT, DATA, BDAT, RSET, NOOP, QUIT),
answering the commands of one read together, as real servers do with a pipelined group.
The ``raw_smtp`` fixture (this module is a plugin of ``conftest.py``) starts them.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest


class RawServer:
    """A TCP server on 127.0.0.1 (a free port) calling ``serve(connection)`` per client, each in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.serve = serve
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # stopped
            self.connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            self.serve(connection)
        except OSError:
            pass  # the client went away, or the test stopped the server
        finally:
            connection.close()

    def stop(self) -> None:
        """Close the listener and every connection; wait for the handlers."""
        self.listener.close()
        for connection in self.connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self.threads:
            thread.join(5)


_ADDRESS = re.compile(r"<([^>]*)>")


@dataclass
class Delivered:
    """One message the scripted server accepted."""

    sender: str
    recipients: list[str]
    content: bytes  # as received: after undoing dot-stuffing for DATA, exactly the chunk for BDAT
    command: str  # "DATA" or "BDAT"


@dataclass
class ScriptedSMTP:
    """A scripted SMTP server for :class:`RawServer`: what it offers and answers, and what it received."""

    extensions: list[str] = field(default_factory=lambda: ["PIPELINING", "SIZE 1000000", "8BITMIME"])
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> "550 5.1.1 unknown"
    mail_reply: str = "250 2.1.0 OK"  # to every MAIL FROM
    mail_replies: dict[int, str] = field(default_factory=dict)  # MAIL FROM number (from 1) -> its reply; 421 closes
    max_recipients: int | None = None  # RCPTs past this many in a transaction: 452 4.5.3 too many recipients
    data_reply: str = "250 2.0.0 queued"  # after the final dot, or to BDAT ... LAST
    #: message number (from 1, over all sessions) -> its final reply; "" takes the message and hangs up unanswered
    data_replies: dict[int, str] = field(default_factory=dict)
    close_after_messages: int | None = None  # a session's messages, after whose final reply it hangs up
    final_reply: bytes | None = None  # raw bytes to send instead of data_reply (garbage, tarpits...)
    greeting: str = "220 raw.test ESMTP"
    pause_after_354: float = 0.0  # seconds to stop reading once DATA is accepted (a slow link)
    chunks: list[bytes] = field(default_factory=list)  # every recv(), as it arrived
    mails: int = 0  # MAIL FROM commands received
    ended: int = 0  # messages whose data ended (final dot, or BDAT LAST), accepted or not
    commands: list[str] = field(default_factory=list)  # every command line
    messages: list[Delivered] = field(default_factory=list)

    def __call__(self, connection: socket.socket) -> None:
        connection.sendall(f"{self.greeting}\r\n".encode())
        session = _Session(self, connection)
        while not session.closed:
            data = connection.recv(65536)
            if not data:
                return
            self.chunks.append(data)
            session.feed(data)

    def command_writes(self) -> list[list[str]]:
        """The command lines of each write (recv), bodies left out: how the client grouped them."""
        writes = []
        for chunk in self.chunks:
            lines = [line for line in chunk.decode("utf-8", "replace").split("\r\n") if _is_command(line)]
            if lines:
                writes.append(lines)
        return writes


def _is_command(line: str) -> bool:
    return bool(re.match(r"(?i)(EHLO|HELO|MAIL FROM|RCPT TO|DATA$|BDAT |RSET|NOOP|QUIT)", line))


class _Session:
    """One client's state: the commands of each read are answered together."""

    def __init__(self, script: ScriptedSMTP, connection: socket.socket) -> None:
        self.script = script
        self.connection = connection
        self.buffer = b""
        self.closed = False
        self.sender: str | None = None
        self.accepted: list[str] = []
        self.rcpts = 0  # RCPT commands in this transaction
        self.in_data = False
        self.chunk_left: int | None = None  # BDAT bytes still to come
        self.messages = 0  # messages this session accepted

    def feed(self, data: bytes) -> None:
        self.buffer += data
        replies: list[bytes] = []
        while not self.closed:
            if self.chunk_left is not None:
                if len(self.buffer) < self.chunk_left:
                    break
                content, self.buffer = self.buffer[: self.chunk_left], self.buffer[self.chunk_left :]
                self.chunk_left = None
                replies.append(self._end_of_message(content, "BDAT"))
            elif self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0 and not self.buffer.startswith(b".\r\n"):
                    break
                if self.buffer.startswith(b".\r\n"):
                    content, self.buffer = b"", self.buffer[3:]
                else:
                    content, self.buffer = self.buffer[: end + 2], self.buffer[end + 5 :]
                self.in_data = False
                content = re.sub(rb"(?m)^\.\.", b".", content)
                replies.append(self._end_of_message(content, "DATA"))
            else:
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    break
                line, self.buffer = self.buffer[:end].decode("utf-8", "replace"), self.buffer[end + 2 :]
                self.script.commands.append(line)
                replies.append(self._command(line))
        if replies:
            self.connection.sendall(b"".join(replies))
            if self.in_data and self.script.pause_after_354:
                time.sleep(self.script.pause_after_354)
        if self.closed:
            self.connection.close()

    def _command(self, line: str) -> bytes:
        verb = line.split(" ", 1)[0].upper()
        if verb in ("EHLO", "HELO"):
            lines = ["raw.test", *self.script.extensions] if verb == "EHLO" else ["raw.test"]
            return "".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{text}\r\n" for i, text in enumerate(lines)
            ).encode()
        if verb == "MAIL":
            self.script.mails += 1
            reply = self.script.mail_replies.get(self.script.mails, self.script.mail_reply)
            if reply.startswith("421"):
                self.closed = True
            if not reply.startswith("2"):
                return f"{reply}\r\n".encode()
            self.sender, self.accepted, self.rcpts = _address(line), [], 0
            return f"{reply}\r\n".encode()
        if verb == "RCPT":
            if self.sender is None:
                return b"503 5.5.1 need MAIL first\r\n"
            address = _address(line)
            self.rcpts += 1
            reply = self.script.rcpt_replies.get(address, "250 2.1.5 OK")
            if self.script.max_recipients is not None and self.rcpts > self.script.max_recipients:
                reply = "452 4.5.3 Error: too many recipients"
            if reply.startswith("2"):
                self.accepted.append(address)
            return f"{reply}\r\n".encode()
        if verb == "DATA":
            if not self.accepted:
                return b"554 5.5.1 no valid recipients\r\n"
            self.in_data = True
            return b"354 go ahead\r\n"
        if verb == "BDAT":
            self.chunk_left = int(line.split()[1])
            return b""
        if verb == "RSET":
            self.sender, self.accepted = None, []
            return b"250 2.0.0 OK\r\n"
        if verb == "NOOP":
            return b"250 2.0.0 OK\r\n"
        if verb == "QUIT":
            self.closed = True
            return b"221 2.0.0 bye\r\n"
        return b"500 5.5.2 unknown command\r\n"

    def _end_of_message(self, content: bytes, command: str) -> bytes:
        self.script.ended += 1
        if not self.accepted or self.sender is None:
            return b"554 5.5.1 no valid recipients\r\n"
        reply = self.script.data_replies.get(self.script.ended, self.script.data_reply)
        if reply.startswith("2") or reply == "":
            self.script.messages.append(Delivered(self.sender, list(self.accepted), content, command))
        self.sender, self.accepted = None, []
        self.messages += 1
        if reply == "" or (
            self.script.close_after_messages is not None and self.messages >= self.script.close_after_messages
        ):
            self.closed = True  # hang up after this reply, whatever else the read held
            if reply == "":
                return b""
        if self.script.final_reply is not None:
            return self.script.final_reply
        return f"{reply}\r\n".encode()


def _address(line: str) -> str:
    match = _ADDRESS.search(line)
    return match.group(1) if match else ""


@pytest.fixture
def raw_smtp():
    """``raw_smtp(**ScriptedSMTP options)`` starts a scripted server; returns (script, port)."""
    servers = []

    def start(**options):
        script = ScriptedSMTP(**options)
        server = RawServer(script)
        servers.append(server)
        return script, server.port

    yield start
    for server in servers:
        server.stop()
