"""The exit statuses of ``mq-send``, defined once.

The sender computes them, the command line returns them, its ``--help`` describes them
from :data:`MEANINGS`, and ``tests/test_docs.py`` checks the reference page against both.
"""

from __future__ import annotations

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


def help_text() -> str:
    """``Exit status: 0 ..., 1 ..., 75 ..., 2 ...`` for ``--help``."""
    return "Exit status: " + ", ".join(f"{int(status)} {meaning}" for status, meaning in MEANINGS.items()) + "."
