"""Which SMTP server the sender talks to, and how: :class:`ServerConfig` and the TLS modes.

Everything here is settled before a connection is opened: the TLS mode and the client TLS
context, the name given in EHLO, the timeouts, the credentials.
:func:`mq_transaction.smtp.open_session` opens a session with it.
"""

from __future__ import annotations

import functools
import socket
import ssl
from dataclasses import dataclass, field

#: The TLS modes (``mq.smtp_tls``, ``--smtp-tls``): the one definition, which the settings,
#: the command-line parsers and the docs checks import.
TLS_NONE, TLS_STARTTLS, TLS_SSL = "none", "starttls", "ssl"
TLS_MODES: tuple[str, ...] = (TLS_NONE, TLS_STARTTLS, TLS_SSL)


@dataclass(frozen=True)
class ServerConfig:
    """Everything needed to open an authenticated session with the server."""

    host: str
    port: int
    tls: str  # one of TLS_MODES
    timeout: float = 30.0
    data_timeout: float = 600.0
    tls_verify: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    helo: str | None = None
    log_bodies: bool = False

    def tls_checks(self) -> str:
        """What TLS checks, in words for an error message: the host name checked and the CAs trusted."""
        if not self.tls_verify:
            return "certificate not verified: mq.smtp_tls_verify = false"
        cas = f"CA file {self.ca_file}" if self.ca_file else "the system's trusted CAs"
        return f"host name checked: {self.host}; trusted: {cas}"

    def tls_context(self) -> ssl.SSLContext:
        """A client TLS context: certificate and host name checked unless disabled."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@functools.cache
def default_helo_name() -> str:
    """The EHLO name smtplib would pick (FQDN, else ``[address]``), looked up once per process.

    smtplib looks it up for every connection, and a slow resolver would then delay each one.
    """
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        return f"[{socket.gethostbyname(socket.gethostname())}]"
    except OSError:
        return "[127.0.0.1]"
