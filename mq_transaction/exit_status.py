"""The exit statuses of ``mq-send`` and ``mq-queue``, defined once.

The sender computes them, the command line returns them, its ``--help`` describes them
from :data:`MEANINGS`, and ``tests/test_docs.py`` checks the reference page against both.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


class SendExit(IntEnum):
    """How an ``mq-send`` run ended (``sysexits.h`` names where one exists)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    TEMPFAIL = 75


#: One short phrase per status, as ``mq-send --help`` prints it.
MEANINGS: dict[SendExit, str] = {
    SendExit.OK: "every due message delivered (or none due)",
    SendExit.FAILED: "a recipient was refused for good, or a message failed or was corrupt (1 wins over 75)",
    SendExit.TEMPFAIL: "a message was deferred or the SMTP server could not be used",
    SendExit.USAGE: "usage or configuration error",
}


class QueueExit(IntEnum):
    """How an ``mq-queue`` command ended (``sysexits.h``'s ``EX_TEMPFAIL`` for 75)."""

    OK = 0
    PROBLEM = 1
    USAGE = 2
    TEMPFAIL = 75


#: One phrase per status, as ``mq-queue --help`` prints it.
QUEUE_MEANINGS: dict[QueueExit, str] = {
    QueueExit.OK: "done",
    QueueExit.PROBLEM: (
        "status --warn-age exceeded, or an id was not in the queue, busy, or in a state the command does not"
        " apply to (the other ids were done), or discard was not confirmed, or import-dir left a message in the"
        " directory or found a sender using it"
    ),
    QueueExit.USAGE: "usage or configuration error, or an argument that is not a queue id (then nothing was done)",
    QueueExit.TEMPFAIL: "the database of a database queue cannot be reached: try again later",
}


def help_text(meanings: Mapping[SendExit, str] | Mapping[QueueExit, str] | None = None, separator: str = ", ") -> str:
    """``Exit status: 0 ..., 1 ..., 75 ..., 2 ...`` for ``--help`` (``mq-send``'s by default)."""
    pairs = (MEANINGS if meanings is None else meanings).items()
    return "Exit status: " + separator.join(f"{int(status)} {meaning}" for status, meaning in pairs) + "."
