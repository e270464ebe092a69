"""Parse and validate the ``mq.*`` settings, once, into a frozen :class:`Settings`.

The Pyramid app and ``mq-send`` read the same keys from the same ini file. Every key,
its type and its default is listed in :data:`KEYS` (and in ``docs/configuration.md``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .addresses import envelope_address
from .durations import parse_duration
from .errors import ConfigurationError, InvalidAddressError
from .smtp import TLS_MODES  # the one definition, beside the client that implements them

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
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


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


@dataclass(frozen=True)
class Settings:
    """Every ``mq.*`` setting, typed and validated. Durations are seconds."""

    queue_dir: str | None = None
    default_sender: str | None = None
    fsync: bool = True
    group_access: bool = False
    tmp_max_age: float = 36 * 3600.0
    smtp_host: str = "localhost"
    smtp_port: int | None = None  # None: 465 for ssl, else 25
    smtp_tls: str | None = None  # None: none for loopback hosts, starttls otherwise
    smtp_tls_verify: bool = True
    smtp_ca_file: str | None = None
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_password_file: str | None = None
    smtp_timeout: float = 30.0
    smtp_data_timeout: float = 600.0
    smtp_helo: str | None = None
    smtp_idle_timeout: float = 30.0
    smtp_connections: int = 1
    max_per_connection: int = 100
    smtp_log: str | None = None
    smtp_log_bodies: bool = False
    min_backoff: float = 300.0
    max_backoff: float = 3600.0
    max_lifetime: float = 5 * 86400.0
    delivery_log: str | None = None
    delivery_log_format: str = "logfmt"
    on_delivered: str | None = None
    on_deferred: str | None = None
    on_failed: str | None = None
    commit_veto: str | None = None
    metrics_file: str | None = None

    @property
    def effective_tls(self) -> str:
        """The TLS mode in force: the setting, else ``none`` for loopback, ``starttls`` otherwise."""
        if self.smtp_tls:
            return self.smtp_tls
        return "none" if is_loopback(self.smtp_host) else "starttls"

    @property
    def effective_port(self) -> int:
        """The SMTP port in force: the setting, else 465 for ``ssl`` and 25 otherwise."""
        if self.smtp_port:
            return self.smtp_port
        return 465 if self.effective_tls == "ssl" else 25

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
                    "mq.smtp_password_file", f"cannot read {self.smtp_password_file}: {exc.strerror}"
                ) from None
        return None

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the given (already parsed) values replaced; None means keep."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


KEYS: dict[str, Callable[[Any], Any]] = {
    "queue_dir": _text,
    "default_sender": _sender,
    "fsync": _boolean,
    "group_access": _boolean,
    "tmp_max_age": _duration,
    "smtp_host": _text,
    "smtp_port": _port,
    "smtp_tls": _choice(TLS_MODES),
    "smtp_tls_verify": _boolean,
    "smtp_ca_file": _optional_text,
    "smtp_username": _optional_text,
    "smtp_password": str,
    "smtp_password_file": _optional_text,
    "smtp_timeout": _duration,
    "smtp_data_timeout": _duration,
    "smtp_helo": _optional_text,
    "smtp_idle_timeout": _duration,
    "smtp_connections": _positive_int,
    "max_per_connection": _positive_int,
    "smtp_log": _optional_text,
    "smtp_log_bodies": _boolean,
    "min_backoff": _duration,
    "max_backoff": _duration,
    "max_lifetime": _duration,
    "delivery_log": _optional_text,
    "delivery_log_format": _choice(LOG_FORMATS),
    "on_delivered": _optional_text,
    "on_deferred": _optional_text,
    "on_failed": _optional_text,
    "commit_veto": _optional_text,
    "metrics_file": _optional_text,
}
assert set(KEYS) == {f.name for f in fields(Settings)}


def parse_settings(raw: Mapping[str, Any], require_queue_dir: bool = True) -> Settings:
    """Return :class:`Settings` from a mapping holding ``mq.*`` keys (others are ignored).

    Raises :class:`ConfigurationError` naming the key for an unknown ``mq.`` key, a bad
    value, or a missing ``mq.queue_dir`` when ``require_queue_dir``.
    """
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        if name not in KEYS:
            raise ConfigurationError(key, "unknown setting (see the configuration reference for every mq.* key)")
        if value is None:
            continue
        try:
            values[name] = KEYS[name](value)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(key, str(exc)) from None
    settings = Settings(**values)
    check_settings(settings, require_queue_dir)
    return settings


def check_settings(settings: Settings, require_queue_dir: bool = True) -> None:
    """Check rules that span keys; raise :class:`ConfigurationError` naming the key."""
    if require_queue_dir and not settings.queue_dir:
        raise ConfigurationError("mq.queue_dir", "missing: set it to the queue directory")
    if settings.tmp_max_age < 3600:
        raise ConfigurationError(
            "mq.tmp_max_age", "must be at least 1h: younger files may belong to transactions still running"
        )
    if settings.min_backoff > settings.max_backoff:
        raise ConfigurationError("mq.min_backoff", "is greater than mq.max_backoff")
    if settings.smtp_password is not None and settings.smtp_password_file:
        raise ConfigurationError(
            "mq.smtp_password_file", "set either mq.smtp_password or mq.smtp_password_file, not both"
        )
    if not settings.smtp_host:
        raise ConfigurationError("mq.smtp_host", "is empty")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
