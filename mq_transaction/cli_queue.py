"""``mq-queue``: the command line over :mod:`mq_transaction.queue_admin` (no logic lives here).

Its text output is :mod:`mq_transaction.cli_format`'s; its JSON is the records' ``to_json()``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from . import queue_admin
from .cli_format import (
    format_details,
    format_list_lines,
    format_list_table,
    format_status,
    json_array_chunks,
    list_line,
    not_message_warning,
    visible,
)
from .config import load_settings, setup_logging
from .database_opening import database_ddl, open_database_queue
from .durations import parse_duration
from .errors import ConfigurationError, MailQueueError, QueueInUseError, QueueUnavailableError
from .exit_status import QUEUE_MEANINGS, QueueExit, help_text
from .interfaces import IMailQueue
from .preflight import check_operator_start, check_queue_access
from .queue import MessageQueue
from .sender import open_queue
from .settings import Settings, key
from .states import STATES, MessageState

#: The subcommands, as build_parser() declares them.
COMMANDS = ("status", "list", "show", "retry", "hold", "release", "discard", "init-db", "import-dir")
#: The subcommands that only read the queue (the others move or remove messages).
READ_ONLY_COMMANDS = ("status", "list", "show")

DESCRIPTION = f"""See and steer the mail queue of mq_transaction.

{
    textwrap.fill(
        "Reads the mq.* settings from CONFIG_URI (an ini file; its [app:main] section, or [app:NAME] for"
        " file.ini#NAME), as mq-send does; --queue-dir or --queue-url overrides the file. "
        + help_text(QUEUE_MEANINGS, "; "),
        80,
    )
}"""


ID_HELP = "a queue id, as send() returned it"
IDS_HELP = "queue ids, as send() returned them"


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to check the documentation against ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="mq-queue", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config_uri", nargs="?", metavar="CONFIG_URI", help="ini file (file.ini or file.ini#name)")
    parser.add_argument("--queue-dir", metavar="DIR", help=f"queue directory ({key('queue_dir')})")
    parser.add_argument(
        "--queue-url", metavar="URL", help=f"PostgreSQL database of a database queue, instead ({key('queue_url')})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser("status", help="counts per state, oldest message, last delivery and failure")
    status.add_argument(
        "--warn-age", metavar="DURATION", type=_duration, help="exit 1 when a waiting message is older (e.g. 30m)"
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(run=_status)

    listing = commands.add_parser("list", help="one line per message (a table at a terminal)")
    listing.add_argument(
        "--state", choices=STATES, metavar="STATE", help=f"only the messages in STATE: {', '.join(STATES)}"
    )
    listing.add_argument("--json", action="store_true", help="a JSON array, one object per message")
    listing.set_defaults(run=_list)

    show = commands.add_parser("show", help="the envelope, the attempt history and the headers of a message")
    show.add_argument("id", metavar="ID", help=ID_HELP)
    show.add_argument("--raw", action="store_true", help="print the whole message, byte for byte, instead")
    show.set_defaults(run=_show)

    retry = commands.add_parser("retry", help="make messages due now (failed ones: to the undelivered recipients)")
    retry.add_argument("ids", nargs="*", metavar="ID", help=IDS_HELP)
    retry.add_argument("--all-failed", action="store_true", help="every failed message")
    retry.add_argument("--all-deferred", action="store_true", help="every deferred message")
    retry.set_defaults(run=_retry)

    hold = commands.add_parser("hold", help="keep messages aside: never sent until released")
    hold.add_argument("ids", nargs="+", metavar="ID", help=IDS_HELP)
    hold.set_defaults(run=_hold)

    release = commands.add_parser("release", help="held messages back to the queue, due now (or to failed)")
    release.add_argument("ids", nargs="+", metavar="ID", help=IDS_HELP)
    release.set_defaults(run=_release)

    discard = commands.add_parser("discard", help="remove messages for good (asks first at a terminal)")
    discard.add_argument("ids", nargs="+", metavar="ID", help=IDS_HELP)
    discard.add_argument("--yes", action="store_true", help="do not ask (needed when not at a terminal)")
    discard.set_defaults(run=_discard)

    init_db = commands.add_parser("init-db", help="create the database queue's tables unless they exist")
    init_db.add_argument("--sql", action="store_true", help="print the SQL instead (for migrations, e.g. Alembic)")
    init_db.set_defaults(run=None)

    import_dir = commands.add_parser(
        "import-dir", help="move every message of a queue directory into this database queue"
    )
    import_dir.add_argument("directory", metavar="DIR", help="the queue directory (stop its mq-send first)")
    import_dir.set_defaults(run=None)
    return parser


def _positionals(argv: list[str]) -> list[str]:
    """The arguments of ``argv`` that are neither options nor an option's value."""
    found = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token in ("--queue-dir", "--queue-url"):
            index += 2
            continue
        if not token.startswith("-"):
            found.append(token)
        index += 1
    return found


def _looks_like_config_uri(token: str) -> bool:
    path = token.split("#", 1)[0]
    return token not in COMMANDS and (path.endswith(".ini") or "://" in token or os.path.exists(path))


def _config_uri_slot(argv: list[str]) -> list[str]:
    """argv with an empty CONFIG_URI before the command when none is given.

    argparse fills an optional positional before the subcommands greedily, so that
    ``mq-queue show ID`` would read ``show`` as the config URI.
    """
    index = 0
    while index < len(argv):
        token = argv[index]
        if token in ("--queue-dir", "--queue-url"):
            index += 2
        elif token.startswith("-"):
            index += 1
        else:
            return [*argv[:index], "", *argv[index:]] if token in COMMANDS else argv
    return argv


def main(argv: list[str] | None = None) -> int:
    """Run ``mq-queue``; return its exit status."""
    parser = build_parser()
    argv = _config_uri_slot(sys.argv[1:] if argv is None else list(argv))
    positionals = _positionals(argv)
    if len(positionals) == 1 and _looks_like_config_uri(positionals[0]):
        # argparse would read the ini file as the command ("invalid choice: 'production.ini'")
        parser.error(f"a COMMAND is required after CONFIG_URI {positionals[0]}: one of {', '.join(COMMANDS)}")
    args = parser.parse_args(argv)
    args.config_uri = args.config_uri or None
    if args.command == "retry" and not (args.ids or args.all_failed or args.all_deferred):
        parser.error("retry needs IDs, --all-failed or --all-deferred")
    try:
        if args.command == "init-db":
            return _init_db(args)
        if args.command == "import-dir":
            return _import_dir(args)
        settings = load_settings(args.config_uri, {key("queue_dir"): args.queue_dir, key("queue_url"): args.queue_url})
        check_operator_start(settings, write=args.command not in READ_ONLY_COMMANDS)
        setup_logging(args.config_uri, 0)
        queue = open_queue(settings)
        return args.run(queue, settings, args)
    except BrokenPipeError:
        # The reader stopped early (mq-queue list | head): no traceback, no error line.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return QueueExit.PROBLEM
    except queue_admin.MessageNotFoundError as exc:
        print(f"mq-queue: error: {exc}", file=sys.stderr)
        return QueueExit.PROBLEM
    except QueueUnavailableError as exc:  # the database queue is away (restart, fail-over): try again later
        print(f"mq-queue: error: {exc}", file=sys.stderr)
        return QueueExit.TEMPFAIL
    except (ConfigurationError, MailQueueError, OSError) as exc:
        print(f"mq-queue: error: {exc}", file=sys.stderr)
        return QueueExit.USAGE


def _warn_not_messages(paths: list[str] | tuple[str, ...]) -> None:
    for path in paths:
        print(not_message_warning(path), file=sys.stderr)


def _init_db(args: argparse.Namespace) -> int:
    if args.sql:
        print(database_ddl(), end="")
        return QueueExit.OK
    settings = load_settings(args.config_uri, {key("queue_dir"): args.queue_dir, key("queue_url"): args.queue_url})
    if not settings.queue_url:
        raise ConfigurationError(key("queue_url"), "init-db is for a database queue: set it, or give --queue-url URL")
    queue = open_database_queue(settings, check_schema=False)
    try:
        created = queue.init_db()
    finally:
        queue.dispose()
    print(f"{'created' if created else 'already there:'} the mail queue tables in {queue.location}")
    return QueueExit.OK


def _import_dir(args: argparse.Namespace) -> int:
    settings = load_settings(args.config_uri, {key("queue_dir"): args.queue_dir, key("queue_url"): args.queue_url})
    if not settings.queue_url:
        raise ConfigurationError(
            key("queue_url"), "import-dir moves mail into a database queue: set it, or give --queue-url URL"
        )
    check_queue_access(args.directory, write=True, tool="mq-queue", write_root=True)
    setup_logging(args.config_uri, -1)  # each message moved is printed below
    with MessageQueue(args.directory, create=False) as source:  # a missing DIR: before the database
        target = open_database_queue(settings)
        from .database_import import Moved, move_queue  # SQLAlchemy: only for a database queue

        def moved(item: Moved) -> None:
            resumed = ", finishing an interrupted import-dir" if item.resumed else ""
            print(f"queue id {item.queue_id} ({item.state}{resumed}): moved to the database queue", flush=True)

        try:
            report = move_queue(source, target, on_moved=moved)
        except QueueInUseError as exc:
            print(f"mq-queue: error: {exc}", file=sys.stderr)
            return QueueExit.PROBLEM
        finally:
            target.dispose()
    for queue_id, why in report.left:
        print(f"mq-queue: error: queue id {queue_id} left in {source.path}: {why}", file=sys.stderr)
    left = f"; {len(report.left)} left in it (above)" if report.left else ""
    print(f"moved {len(report.moved)} message(s) from {source.path} to {target.location}{left}")
    return QueueExit.PROBLEM if report.left else QueueExit.OK


def _status(queue: IMailQueue, settings: Settings, args: argparse.Namespace) -> int:
    report = queue_admin.queue_status(queue, args.warn_age, settings.delivery_log, settings.delivery_log_format)
    _warn_not_messages(report.not_messages)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(format_status(report, tty=sys.stdout.isatty()))
    return QueueExit.PROBLEM if report.over_warn_age else QueueExit.OK


def _list(queue: IMailQueue, settings: Settings, args: argparse.Namespace) -> int:
    records = queue_admin.iter_messages(queue, args.state)
    if args.json:
        for chunk in json_array_chunks(record.to_json() for record in records):
            sys.stdout.write(chunk)
        sys.stdout.write("\n")
    elif sys.stdout.isatty():
        print(format_list_table(list(records)))
    else:
        for record in records:
            print(list_line(record))
    # After the listing: it starts at once, and the warnings are not scrolled away.
    sys.stdout.flush()
    _warn_not_messages(queue_admin.not_messages(queue, args.state))
    return QueueExit.OK


def _show(queue: IMailQueue, settings: Settings, args: argparse.Namespace) -> int:
    if args.raw:
        content = queue_admin.raw_message(queue, args.id)
        sys.stdout.flush()
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
    else:
        print(format_details(queue_admin.details(queue, args.id)))
    return QueueExit.OK


def _report(results: list[queue_admin.ChangeResult], nothing: str = "") -> int:
    """Print what was done (stdout) and what was not (stderr); 1 when anything was not."""
    if not results:
        print(nothing)
    for result in results:
        if result.done:
            print(visible(result.text))
        else:
            print(f"mq-queue: error: {visible(result.text)}", file=sys.stderr)
    return QueueExit.OK if all(result.done for result in results) else QueueExit.PROBLEM


def _retry(queue: IMailQueue, settings: Settings, args: argparse.Namespace) -> int:
    states = [
        state
        for state, wanted in ((MessageState.FAILED, args.all_failed), (MessageState.DEFERRED, args.all_deferred))
        if wanted
    ]
    ids = queue_admin.check_ids(args.ids)
    return _report(queue_admin.retry(queue, ids, states), f"no {' or '.join(states)} message to retry")


def _hold(queue: IMailQueue, settings: Settings, args: argparse.Namespace) -> int:
    return _report(queue_admin.hold(queue, queue_admin.check_ids(args.ids)))


def _release(queue: IMailQueue, settings: Settings, args: argparse.Namespace) -> int:
    return _report(queue_admin.release(queue, queue_admin.check_ids(args.ids)))


def _discard(queue: IMailQueue, settings: Settings, args: argparse.Namespace) -> int:
    ids = queue_admin.check_ids(args.ids)
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                "mq-queue: error: discard removes mail for good; without a terminal to confirm at, "
                "pass --yes. Nothing was removed.",
                file=sys.stderr,
            )
            return QueueExit.USAGE
        found = queue_admin.list_given(queue, ids)
        if found:  # ids of no message are reported below, with nothing to confirm
            print(format_list_lines(found))
            try:
                answer = input(f"Discard {len(found)} message(s) for good? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("Nothing was removed.")
                return QueueExit.PROBLEM
    return _report(queue_admin.discard(queue, ids))


if __name__ == "__main__":
    sys.exit(main())
