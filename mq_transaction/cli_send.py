"""``mq-send``: the command line over :mod:`mq_transaction.sender` (no logic lives here)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import textwrap
import threading

from .config import attach_smtp_log, load_settings, setup_logging
from .errors import ConfigurationError, MailQueueError, QueueUnavailableError
from .exit_status import SendExit, help_text
from .preflight import check_sender_start
from .sender import Sender, open_queue
from .settings import LOG_FORMATS, key
from .smtp_config import TLS_MODES

#: The settings a flag overrides: ``--queue-dir`` sets ``mq.queue_dir``, and so on (each
#: flag's ``dest`` is the setting's name).
SETTING_FLAGS = (
    "queue_dir",
    "queue_url",
    "smtp_host",
    "smtp_port",
    "smtp_tls",
    "smtp_username",
    "smtp_password_file",
    "smtp_timeout",
    "delivery_log",
    "delivery_log_format",
    "smtp_log",
    "metrics_file",
)

DESCRIPTION = f"""Deliver the mail queued by mq_transaction.

Reads the mq.* settings from CONFIG_URI (an ini file; its [app:main] section, or
[app:NAME] for file.ini#NAME); flags override the file.

{textwrap.fill(help_text(), 80)}"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to check the documentation against ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="mq-send", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config_uri", nargs="?", metavar="CONFIG_URI", help="ini file (file.ini or file.ini#name)")
    parser.add_argument("--queue-dir", metavar="DIR", help=f"queue directory ({key('queue_dir')})")
    parser.add_argument(
        "--queue-url", metavar="URL", help=f"PostgreSQL database of a database queue, instead ({key('queue_url')})"
    )
    parser.add_argument("--smtp-host", metavar="HOST", help=f"SMTP server ({key('smtp_host')}, default localhost)")
    parser.add_argument("--smtp-port", metavar="PORT", help=f"SMTP port ({key('smtp_port')}, default 25, 465 for ssl)")
    parser.add_argument(
        "--smtp-tls",
        choices=TLS_MODES,
        help=f"TLS mode ({key('smtp_tls')}; default none for loopback hosts, starttls otherwise)",
    )
    parser.add_argument("--smtp-username", metavar="USER", help=f"AUTH user name ({key('smtp_username')})")
    parser.add_argument(
        "--smtp-password-file",
        metavar="FILE",
        help=f"file holding the AUTH password ({key('smtp_password_file')})",
    )
    parser.add_argument("--smtp-timeout", metavar="S", help=f"connect and command timeout ({key('smtp_timeout')}, 30s)")
    parser.add_argument("--flush", action="store_true", help="ignore the retry schedule: try every message now")
    parser.add_argument("--max-messages", metavar="N", type=int, help="stop after N delivery attempts")
    parser.add_argument("--delivery-log", metavar="FILE", help=f"append one line per attempt ({key('delivery_log')})")
    parser.add_argument("--delivery-log-format", choices=LOG_FORMATS, help="delivery log format (default logfmt)")
    parser.add_argument("--smtp-log", metavar="FILE", help=f"write the SMTP dialog to FILE ({key('smtp_log')})")
    parser.add_argument(
        "--metrics-file",
        metavar="FILE",
        help=f"write Prometheus text metrics to FILE, atomically ({key('metrics_file')})",
    )
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="stay running: send each message moments after its commit (one daemon per queue)",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug output, with the SMTP dialog")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors only")
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, object]:
    """The ``mq.*`` settings given as flags."""
    return {key(name): getattr(args, name) for name in SETTING_FLAGS}


def main(argv: list[str] | None = None) -> int:
    """Run ``mq-send``; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_messages is not None and args.max_messages < 1:
        parser.error("--max-messages must be at least 1")
    if args.daemon and (args.flush or args.max_messages is not None):
        parser.error("--flush and --max-messages are for one-shot runs, not --daemon")
    verbosity = 1 if args.verbose else -1 if args.quiet else 0
    try:
        settings = load_settings(args.config_uri, overrides_from(args))
        check_sender_start(settings, daemon=args.daemon)
        setup_logging(args.config_uri, verbosity)
        if settings.smtp_log:
            attach_smtp_log(settings.smtp_log, propagate=verbosity > 0, mode=0o640 if settings.group_access else 0o600)
        sender = Sender(settings, queue=open_queue(settings, wait=args.daemon))
        # Imported only when used: each costs start-up time (prometheus_client most), which a
        # one-shot run from cron pays every time (bench/network.py, bench/drain.py).
        metrics = None
        if settings.metrics_file:
            from .metrics import Metrics

            metrics = Metrics(settings.metrics_file)
        if args.daemon:
            from .daemon import Daemon

            daemon = Daemon(sender, metrics=metrics, idle_timeout=settings.smtp_idle_timeout)
            daemon.acquire_lock()
    except QueueUnavailableError as exc:  # the database queue is away: try again later
        print(f"mq-send: error: {exc}", file=sys.stderr)
        return SendExit.TEMPFAIL
    except (ConfigurationError, MailQueueError, OSError) as exc:
        print(f"mq-send: error: {exc}", file=sys.stderr)
        return SendExit.USAGE
    if args.daemon:
        daemon.install_signal_handlers()
        return daemon.run()
    if verbosity == 0 and sys.stderr.isatty():
        sender.progress = progress_bar
    # SIGTERM (a cron or systemd timeout, kill): finish the messages in flight, give back
    # those claimed ahead (a database queue's would wait for their leases to run out), QUIT.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    result = sender.run(flush=args.flush, max_messages=args.max_messages, should_stop=stop.is_set)
    if metrics is not None:
        metrics.add_run(result)
        try:
            metrics.write(sender.queue)
        except OSError as exc:
            logging.getLogger("mq_transaction.sender").error("cannot write metrics file %s: %s", metrics.path, exc)
    return int(result.exit_status)


def progress_bar(done: int, total: int) -> None:
    """A one-line progress bar on a terminal, for large backlogs only."""
    if total < 50:
        return
    width = 30
    filled = width * done // total
    end = "\n" if done == total else ""
    print(f"\rmq-send [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
