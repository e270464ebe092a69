"""Parse and validate the ``mq.*`` settings, once, into a frozen :class:`Settings`.

The Pyramid app and ``mq-send`` read the same keys from the same ini file. Every key,
its type and its default is listed in :data:`KEYS` (and in ``docs/configuration.md``).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .addresses import envelope_address
from .durations import parse_duration
from .errors import ConfigurationError, InvalidAddressError
from .smtp_config import TLS_MODES, TLS_NONE, TLS_SSL, TLS_STARTTLS  # defined once, beside ServerConfig

PREFIX = "mq."
LOG_FORMATS = ("logfmt", "json")


def _as_text(value: object) -> str:
    # Settings built in Python may hold a pathlib.Path, or a wrong type (a TypeError
    # becomes a ConfigurationError naming the key, not an AttributeError from .strip()).
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    return value


def _text(value: str) -> str:
    return _as_text(value).strip()


def _optional_text(value: str) -> str | None:
    return _as_text(value).strip() or None


def _boolean(value: str | bool) -> bool:
    # PasteDeploy's own converter, so a boolean means here what it means to Pyramid users
    # (pyramid.settings.asbool takes the same true words, but reads any other word as false).
    # Imported here: importing PasteDeploy costs mq-send about 20 ms at every start.
    from paste.deploy.converters import asbool

    try:
        return asbool(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a boolean (true/false, yes/no, on/off, 1/0)") from None


def _positive_int(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"{value!r} is not a whole number")
    number = int(text)
    if number < 1:
        raise ValueError(f"{value!r} must be a whole number of at least 1")
    return number


def _port(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{value!r} is not a TCP port (1-65535)")
    return int(text)


def _duration(value: str) -> float:
    return parse_duration(value)


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = _as_text(value).strip().lower()
        if lowered not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return lowered

    return parse


def _sender(value: str) -> str | None:
    value = _as_text(value)
    if not value.strip():
        return None
    try:
        return envelope_address(value.strip(), "default sender")
    except InvalidAddressError as exc:
        raise ValueError(str(exc)) from None


def _queue_url(value: str) -> str:
    # Parsed (and the driver named) when the queue is opened; here only the shape is checked,
    # and never echoed back: a URL may hold a password.
    text = _as_text(value).strip()
    if text and not text.startswith(("postgresql://", "postgresql+")):
        raise ValueError("is not a PostgreSQL URL (postgresql://user@host/dbname)")
    return text


def _setting(parse: Callable[[Any], Any], default: Any, *, secret: bool = False) -> Any:
    # One field of Settings and the parser of its ini value, declared together; a secret
    # stays out of repr() (hence out of tracebacks and logs).
    return field(default=default, repr=not secret, metadata={"parse": parse, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Every ``mq.*`` setting, typed and validated. Durations are seconds."""

    queue_dir: str | None = _setting(_text, None)
    queue_url: str | None = _setting(_queue_url, None, secret=True)  # the database queue (instead of queue_dir)
    queue_session: str | None = _setting(_optional_text, None)  # Pyramid: the request attribute of the app's session
    claim_timeout: float = _setting(_duration, 300.0)  # how long a database queue claim lasts without renewal
    default_sender: str | None = _setting(_sender, None)
    fsync: bool = _setting(_boolean, True)
    group_access: bool = _setting(_boolean, False)
    tmp_max_age: float = _setting(_duration, 36 * 3600.0)
    smtp_host: str = _setting(_text, "localhost")
    smtp_port: int | None = _setting(_port, None)  # None: 465 for ssl, else 25
    smtp_tls: str | None = _setting(_choice(TLS_MODES), None)  # None: none for loopback hosts, starttls otherwise
    smtp_tls_verify: bool = _setting(_boolean, True)
    smtp_ca_file: str | None = _setting(_optional_text, None)
    smtp_username: str | None = _setting(_optional_text, None)
    smtp_password: str | None = _setting(str, None, secret=True)
    smtp_password_file: str | None = _setting(_optional_text, None)
    smtp_allow_plaintext_auth: bool = _setting(_boolean, False)
    smtp_timeout: float = _setting(_duration, 30.0)
    smtp_data_timeout: float = _setting(_duration, 600.0)
    smtp_helo: str | None = _setting(_optional_text, None)
    smtp_idle_timeout: float = _setting(_duration, 30.0)
    smtp_connections: int = _setting(_positive_int, 4)
    max_per_connection: int = _setting(_positive_int, 100)
    smtp_log: str | None = _setting(_optional_text, None)
    smtp_log_bodies: bool = _setting(_boolean, False)
    min_backoff: float = _setting(_duration, 300.0)
    max_backoff: float = _setting(_duration, 3600.0)
    max_lifetime: float = _setting(_duration, 5 * 86400.0)
    delivery_log: str | None = _setting(_optional_text, None)
    delivery_log_format: str = _setting(_choice(LOG_FORMATS), "logfmt")
    on_delivered: str | None = _setting(_optional_text, None)
    on_deferred: str | None = _setting(_optional_text, None)
    on_failed: str | None = _setting(_optional_text, None)
    commit_veto: str | None = _setting(_optional_text, None)
    metrics_file: str | None = _setting(_optional_text, None)

    @property
    def effective_tls(self) -> str:
        """The TLS mode in force: the setting, else ``none`` for loopback, ``starttls`` otherwise."""
        if self.smtp_tls:
            return self.smtp_tls
        return TLS_NONE if is_loopback(self.smtp_host) else TLS_STARTTLS

    @property
    def effective_port(self) -> int:
        """The SMTP port in force: the setting, else 465 for ``ssl`` and 25 otherwise."""
        if self.smtp_port:
            return self.smtp_port
        return 465 if self.effective_tls == TLS_SSL else 25

    def read_password(self) -> str | None:
        """The SMTP password: ``smtp_password``, else the password file without its newline."""
        if self.smtp_password is not None:
            return self.smtp_password
        if self.smtp_password_file:
            try:
                with open(self.smtp_password_file, encoding="utf-8") as handle:
                    return handle.read().rstrip("\r\n")
            except OSError as exc:
                raise ConfigurationError(
                    key("smtp_password_file"), f"cannot read {self.smtp_password_file}: {exc.strerror}"
                ) from None
        return None


#: Every setting's name (without the ``mq.`` prefix) and the function that parses its value.
KEYS: dict[str, Callable[[Any], Any]] = {f.name: f.metadata["parse"] for f in fields(Settings)}
#: The ini keys whose values are secrets: no message, log line or repr() shows them.
SECRET_KEYS = frozenset(PREFIX + f.name for f in fields(Settings) if f.metadata["secret"])


def key(name: str) -> str:
    """The ini key of the setting ``name``: ``key("smtp_host") == "mq.smtp_host"``.

    Raises ``KeyError`` for a name that is not a setting, so a misspelt name in code fails
    where it is written rather than in the message of an error.
    """
    if name not in KEYS:
        raise KeyError(f"{name!r} is not a setting of mq_transaction")
    return PREFIX + name


def parse_settings(raw: Mapping[str, Any], require_queue_dir: bool = True) -> Settings:
    """Return :class:`Settings` from a mapping holding ``mq.*`` keys (others are ignored).

    Raises :class:`ConfigurationError` naming the key for an unknown ``mq.`` key, a bad
    value, or a missing ``mq.queue_dir`` when ``require_queue_dir``.
    """
    values: dict[str, Any] = {}
    for ini_key, value in raw.items():
        if not ini_key.startswith(PREFIX):
            continue
        name = ini_key[len(PREFIX) :]
        if name not in KEYS:
            raise ConfigurationError(ini_key, unknown_key_problem(name))
        if value is None:
            continue
        try:
            values[name] = KEYS[name](value)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(ini_key, str(exc)) from None
    settings = Settings(**values)
    check_settings(settings, require_queue_dir)
    return settings


def unknown_key_problem(name: str) -> str:
    """What to say about ``mq.NAME`` that is not a setting: the closest real key, if one is close."""
    close = difflib.get_close_matches(name, KEYS, n=1)
    hint = f"did you mean {PREFIX}{close[0]}?" if close else "see the configuration reference for every mq.* key"
    return f"unknown setting; {hint}"


def check_settings(settings: Settings, require_queue_dir: bool = True) -> None:
    """Check rules that span keys; raise :class:`ConfigurationError` naming the key."""
    if settings.queue_dir and settings.queue_url:
        raise ConfigurationError(key("queue_url"), "set either mq.queue_dir or mq.queue_url, not both")
    if require_queue_dir and not settings.queue_dir and not settings.queue_url:
        raise ConfigurationError(
            key("queue_dir"), "missing: set it to the queue directory (or mq.queue_url to a PostgreSQL database)"
        )
    if settings.queue_session and not settings.queue_url:
        raise ConfigurationError(key("queue_session"), "needs mq.queue_url: the session writes into the database queue")
    if settings.claim_timeout < 2:
        raise ConfigurationError(
            key("claim_timeout"), "must be at least 2s (a live sender renews its claims every third)"
        )
    if settings.tmp_max_age < 3600:
        raise ConfigurationError(
            key("tmp_max_age"), "must be at least 1h: younger files may belong to transactions still running"
        )
    if settings.min_backoff > settings.max_backoff:
        raise ConfigurationError(key("min_backoff"), "is greater than mq.max_backoff")
    if settings.smtp_password is not None and settings.smtp_password_file:
        raise ConfigurationError(
            key("smtp_password_file"), "set either mq.smtp_password or mq.smtp_password_file, not both"
        )
    if not settings.smtp_host:
        raise ConfigurationError(key("smtp_host"), "is empty")
    if (
        settings.smtp_username
        and settings.effective_tls == TLS_NONE
        and not is_loopback(settings.smtp_host)
        and not settings.smtp_allow_plaintext_auth
    ):
        raise ConfigurationError(
            key("smtp_tls"),
            f"is none and {key('smtp_username')} is set: the password would cross the network to "
            f"{settings.smtp_host} in clear. Use {key('smtp_tls')} = starttls or ssl, or, on a network you trust, "
            f"set {key('smtp_allow_plaintext_auth')} = true",
        )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_callable(key: str, name: str) -> Callable[..., Any]:
    """Import the callable a dotted-name setting names (``package.module:attr`` or ``package.module.attr``).

    The one resolver of the project (delivery hooks, ``mq.commit_veto``): raises
    :class:`ConfigurationError` naming ``key`` when the name cannot be imported or is not callable.
    """
    try:
        target = pkgutil.resolve_name(name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(key, f"cannot import {name!r}: {exc}") from None
    if not callable(target):
        raise ConfigurationError(key, f"{name!r} is not callable")
    return target
