"""A transactional, persistent outgoing mail queue.

``QueuedMailer.send()`` writes a message durably when called and makes it deliverable
only when the transaction commits; ``mq-send`` delivers it.
"""

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


def __getattr__(name: str) -> object:
    # The database queue imports SQLAlchemy: only when it is used (the directory queue needs none).
    if name == "DatabaseQueue":
        from .database_queue import DatabaseQueue

        return DatabaseQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
