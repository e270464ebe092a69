"""A transactional, persistent outgoing mail queue.

``QueuedMailer.send()`` writes a message durably when called and makes it deliverable
only when the transaction commits; ``mq-send`` delivers it.
"""

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import (
    ConfigurationError,
    CorruptMessageError,
    InvalidAddressError,
    InvalidMessageError,
    MailQueueError,
    NoRecipientsError,
    NoSenderError,
    NoTransactionError,
    QueueNotFoundError,
    QueueUnavailableError,
    QueueWriteError,
    UnknownQueueIdError,
)

if TYPE_CHECKING:
    from .database_queue import DatabaseQueue
    from .mailer import QueuedMailer
    from .queue import MessageQueue

__all__ = [
    "ConfigurationError",
    "CorruptMessageError",
    "DatabaseQueue",
    "InvalidAddressError",
    "InvalidMessageError",
    "MailQueueError",
    "MessageQueue",
    "NoRecipientsError",
    "NoSenderError",
    "NoTransactionError",
    "QueueNotFoundError",
    "QueueUnavailableError",
    "QueueWriteError",
    "QueuedMailer",
    "UnknownQueueIdError",
    "__version__",
]


#: What is imported on first use, not with the package: ``mq-send`` never needs the mailer
#: (``transaction``, message preparation), and the database queue imports SQLAlchemy.
_LAZY = {
    "DatabaseQueue": "database_queue",
    "MessageQueue": "queue",
    "QueuedMailer": "mailer",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
