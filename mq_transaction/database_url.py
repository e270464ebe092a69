"""Database URLs (``mq.queue_url``): checked, normalised and masked without SQLAlchemy.

An ``mq.queue_url`` is an SQLAlchemy URL for PostgreSQL: ``postgresql://``,
``postgresql+psycopg://`` or ``postgresql+psycopg2://``, then
``user:password@host:port/database?parameter=value``. Plain ``postgresql://`` means
psycopg 3. A password never leaves this module unmasked except towards the driver.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .database_sql import URL_KEY
from .errors import ConfigurationError

#: Seconds one connection attempt may take (libpq's ``connect_timeout``) unless the URL
#: sets its own (``?connect_timeout=N``): a database host that accepts and never answers
#: (a frozen server, a fail-over under way) would otherwise hold a sender, and its
#: ``SIGTERM``, for good.
CONNECT_TIMEOUT = 10

#: SQLAlchemy's URL grammar (``sqlalchemy.engine.url``), with the password's span kept.
_URL = re.compile(
    r"""
    (?P<name>[\w+]+)://
    (?:
        (?P<username>[^:/]*)
        (?::(?P<password>[^@]*))?
    @)?
    (?:
        (?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?
        (?::(?P<port>[^/?]*))?
    )?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    $""",
    re.X,
)


@dataclass(frozen=True, eq=False)
class DatabaseURL:
    """A checked PostgreSQL URL: ``drivername`` (``postgresql+psycopg`` for plain
    ``postgresql://``), the URL itself, and ``masked`` (its password replaced by ``***``)."""

    drivername: str
    text: str
    masked: str
    #: The URL's parameters (``?connect_timeout=5&options=...``), decoded.
    query: dict[str, str]

    @property
    def driver(self) -> str:
        """``psycopg`` or ``psycopg2`` (or another driver SQLAlchemy knows)."""
        return self.drivername.partition("+")[2]

    def libpq_uri(self) -> str:
        """The URL as libpq reads it (``postgresql://...``), password included: for the driver only."""
        return "postgresql" + self.text[len(self.drivername) :]

    def connect_args(self, **args: Any) -> dict[str, Any]:
        """The driver's connection arguments: ``args``, and :data:`CONNECT_TIMEOUT` unless the URL sets one."""
        if "connect_timeout" not in self.query:
            args["connect_timeout"] = CONNECT_TIMEOUT
        return args


def normalise_url(url: Any) -> DatabaseURL:
    """``url`` (a string or an SQLAlchemy URL) checked as a PostgreSQL URL.

    Raises :class:`ConfigurationError` (the password masked) for anything else.
    """
    if not isinstance(url, str):  # an sqlalchemy.URL
        url = url.render_as_string(hide_password=False)
    match = _URL.match(url.strip())
    port = match and match.group("port")
    if match is None or (port and not port.isdigit()):
        reason = f"invalid port {port!r}" if match else "not in the form postgresql://user:password@host/database"
        raise ConfigurationError(URL_KEY, f"{mask_url(url)} is not a database URL ({reason})")
    name = match.group("name")
    if name.partition("+")[0] != "postgresql":
        raise ConfigurationError(URL_KEY, f"{mask_url(url)} is not a PostgreSQL URL (postgresql://...)")
    text = url.strip()
    if name == "postgresql":
        name = "postgresql+psycopg"
        text = name + text[len("postgresql") :]
    query = dict(urllib.parse.parse_qsl(match.group("query") or "", keep_blank_values=True))
    return DatabaseURL(name, text, _masked(text), query)


def mask_url(url: Any) -> str:
    """``url`` with its password replaced by ``***``, as SQLAlchemy renders it; never raises."""
    text = url if isinstance(url, str) else _render(url)
    return _masked(text)


def _render(url: Any) -> str:
    try:
        return str(url.render_as_string(hide_password=True))
    except Exception:  # noqa: BLE001 - not a URL object: mask its text
        return str(url)


def _masked(text: str) -> str:
    match = _URL.match(text.strip())
    if match is not None:
        if match.group("password") is None:
            return text.strip()
        start, end = match.span("password")
        return text.strip()[:start] + "***" + text.strip()[end:]
    scheme, sep, rest = text.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if sep and at and ":" in userinfo:
        return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
    return text if not at else f"{scheme}{sep}***@{host}"
