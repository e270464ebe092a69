"""Read ``mq.*`` settings (and logging) from a Pyramid-style config URI for the command-line tools."""

from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Mapping

from .durations import iso_utc
from .errors import ConfigurationError
from .logfiles import LogFileHandler
from .settings import SECRET_KEYS, Settings, parse_settings


def read_config_uri(config_uri: str) -> dict[str, str]:
    """The settings of ``[app:main]`` (or ``[app:NAME]`` for ``file.ini#NAME``) in an ini file.

    Values are read as ``pserve`` reads them (PasteDeploy: ``%(here)s`` and other ``%(name)s``
    references are replaced, and a literal ``%`` is written ``%%``), so the app and the
    command-line tools see the same values. A section that does not exist is an error that
    lists the file's ``[app:*]`` sections; an error in a secret's value never shows the value.
    """
    import plaster

    path = config_uri.split("#", 1)[0]
    if "://" not in config_uri and not os.path.isfile(path):
        problem = "is a directory, not an ini file" if os.path.isdir(path) else "does not exist"
        raise ConfigurationError("CONFIG_URI", f"{path} {problem}")
    try:
        name = plaster.parse_uri(config_uri).fragment or "main"
        loader = plaster.get_loader(config_uri, protocols=["wsgi"])
        sections = loader.get_sections()
    except Exception as exc:  # noqa: BLE001 - plaster and configparser raise many kinds
        raise ConfigurationError("CONFIG_URI", f"cannot read {config_uri}: {exc}") from None
    section = f"app:{name}"
    if section not in sections:
        raise ConfigurationError("CONFIG_URI", missing_section_problem(path, section, sections))
    try:
        return dict(loader.get_settings(section))
    except configparser.InterpolationError as exc:
        raise ConfigurationError(exc.option, interpolation_problem(exc)) from None
    except Exception as exc:  # noqa: BLE001 - plaster and configparser raise many kinds
        raise ConfigurationError("CONFIG_URI", f"cannot read {config_uri}: {exc}") from None


def missing_section_problem(path: str, section: str, sections: list[str]) -> str:
    """``[app:foo]`` is not in the file: say so, and which ``[app:*]`` sections it has."""
    apps = [name for name in sections if name.startswith("app:")]
    if not apps:
        return f"{path} has no [{section}] section, and no [app:*] section at all (mq.* settings go in one)"
    listed = ", ".join(f"[{name}]" for name in apps)
    example = f"{path}#{apps[0][len('app:') :]}"
    return f"{path} has no [{section}] section; its app sections are {listed} (choose one as {example})"


def interpolation_problem(exc: configparser.InterpolationError) -> str:
    """What is wrong with a ``%`` in a value; a secret's value is never quoted."""
    if exc.option in SECRET_KEYS:
        return (
            f"its value in [{exc.section}] holds a '%' that is not a valid %(name)s reference; in an ini file write a "
            "literal '%' as '%%' (the value is not shown)"
        )
    return f"{exc.message.split(': ', 1)[-1]}; in an ini file write a literal '%' as '%%'"


class UTCFormatter(logging.Formatter):
    """Timestamps in ISO 8601 UTC (``2026-11-28T15:11:36.123456Z``), as everywhere in mq_transaction."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return iso_utc(record.created)


def setup_logging(config_uri: str | None, verbosity: int) -> None:
    """Configure logging from the ini's logging sections when it has them, else to stderr.

    ``verbosity`` is -1 (quiet: errors only), 0 (warnings and deliveries) or 1 (debug,
    with the SMTP dialog).
    """
    level = {-1: logging.ERROR, 0: logging.INFO, 1: logging.DEBUG}[max(-1, min(1, verbosity))]
    if config_uri and _has_logging_sections(config_uri):
        import plaster

        plaster.setup_logging(config_uri)
        if verbosity:
            logging.getLogger("mq_transaction").setLevel(level)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("mq_transaction").setLevel(level)


def _has_logging_sections(config_uri: str) -> bool:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(config_uri.split("#", 1)[0], encoding="utf-8")
    except configparser.Error:
        return False
    return parser.has_section("loggers")


def attach_smtp_log(path: str, propagate: bool, mode: int = 0o600) -> logging.Handler:
    """Write the SMTP dialog (logger ``mq_transaction.smtp``) to ``path``, timestamped.

    The file is created with ``mode`` and reopened by itself after log rotation
    (:class:`~mq_transaction.logfiles.LogFileHandler`).
    """
    handler = LogFileHandler(path, mode=mode)
    handler.setFormatter(UTCFormatter("%(asctime)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("mq_transaction.smtp")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = propagate
    return handler


def load_settings(config_uri: str | None, overrides: Mapping[str, object]) -> Settings:
    """Settings from the config file, with ``overrides`` (``mq.*`` keys, from flags) on top."""
    raw: dict[str, object] = dict(read_config_uri(config_uri)) if config_uri else {}
    raw.update({key: value for key, value in overrides.items() if value is not None})
    return parse_settings(raw)
