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
    QueueWriteError,
    UnknownQueueIdError,
)
from .mailer import QueuedMailer
from .queue import MessageQueue

__all__ = [
    "ConfigurationError",
    "CorruptMessageError",
    "InvalidAddressError",
    "InvalidMessageError",
    "MailQueueError",
    "MessageQueue",
    "NoRecipientsError",
    "NoSenderError",
    "NoTransactionError",
    "QueueWriteError",
    "QueuedMailer",
    "UnknownQueueIdError",
    "__version__",
]
