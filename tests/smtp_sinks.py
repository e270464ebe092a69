"""Real SMTP servers on 127.0.0.1 for the sender's tests (aiosmtpd), and their fixtures."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    """A TCP port nobody listens on right now (aiosmtpd 1.4 cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Received:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str] = field(default_factory=list)


@dataclass
class Behaviour:
    """How the server answers; tests change it between runs."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> "550 5.1.1 ..."
    rcpt_default: str | None = None  # a reply for every RCPT, e.g. "451 4.3.0 try later"
    data_reply: str | None = None  # a reply after the final dot, e.g. "554 5.7.1 spam"
    drop_after_data: bool = False  # record the message, then drop the connection
    close_after: int | None = None  # answer 421 to MAIL FROM once this many messages arrived


class RecordingHandler:
    """An aiosmtpd handler that records what arrives and answers per :class:`Behaviour`."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        self.sessions = 0
        self.offer_pipelining = False
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        if self.offer_pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        limit = self.behaviour.close_after
        if limit is not None and len(self.received) >= limit:
            self.behaviour.close_after = None
            return "421 4.3.2 shutting down"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        reply = self.behaviour.rcpt_replies.get(address) or self.behaviour.rcpt_default
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, list(envelope.mail_options))
            )
        if self.behaviour.drop_after_data:
            raise ConnectionResetError("dropping the connection after DATA, as a test asks")
        return self.behaviour.data_reply or "250 2.0.0 Message accepted"

    def message_ids(self) -> list[str]:
        """The Message-ID of every received message, in order of arrival."""
        ids = []
        for item in self.received:
            for line in item.content.split(b"\r\n"):
                if line.lower().startswith(b"message-id:"):
                    ids.append(line.split(b":", 1)[1].strip().decode())
                    break
        return ids


class Sink:
    """A running server: ``port``, ``handler`` (what arrived) and ``stop()``."""

    def __init__(self, handler: RecordingHandler, port: int | None = None, **controller_options) -> None:
        self.handler = handler
        self.port = port or free_port()
        self.controller = Controller(handler, hostname="127.0.0.1", port=self.port, **controller_options)
        self.controller.start()

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def behaviour(self) -> Behaviour:
        return self.handler.behaviour

    def stop(self) -> None:
        """Stop the server (again is fine)."""
        if self.controller._thread is not None:
            self.controller.stop()


@pytest.fixture
def smtp_sink():
    """A plain SMTP server on 127.0.0.1 that accepts everything unless told otherwise."""
    sink = Sink(RecordingHandler())
    yield sink
    sink.stop()


def make_certificate(directory, names=("localhost", "127.0.0.1"), expired=False, stem="cert") -> tuple[str, str]:
    """A self-signed certificate for ``names`` (host names or IP addresses); returns (cert file, key file).

    ``expired`` makes one that expired yesterday.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def alternative_name(name: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            return x509.DNSName(name)

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    if expired:
        now -= datetime.timedelta(days=31)

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([alternative_name(n) for n in names]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = str(directory / f"{stem}.pem")
    key_file = str(directory / f"{stem}-key.pem")
    with open(cert_file, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_file, key_file


USERNAME, PASSWORD = "mailer", "s3cret-Pa55word"


def check_password(server, session, envelope, mechanism, auth_data):
    """An aiosmtpd authenticator accepting only USERNAME/PASSWORD."""
    ok = auth_data.login == USERNAME.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_auth_sink(tmp_path):
    """A server that requires STARTTLS and AUTH, with a self-signed certificate.

    Yields ``(sink, ca_file)``: the certificate doubles as its own CA file.
    """
    cert_file, key_file = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    sink = Sink(
        RecordingHandler(),
        tls_context=context,
        require_starttls=True,
        authenticator=check_password,
        auth_required=True,
        auth_require_tls=True,
    )
    yield sink, cert_file
    sink.stop()
