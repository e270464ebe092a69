"""The exceptions this project raises to its users."""

from __future__ import annotations


class MailQueueError(Exception):
    """Base class of every error raised by mq_transaction and mq_pyramid."""


class InvalidMessageError(MailQueueError, ValueError):
    """The message given to ``send()``/``enqueue()`` cannot be queued as it is."""


class InvalidAddressError(InvalidMessageError):
    """An envelope address is malformed; the message names the bad value."""


class NoRecipientsError(InvalidMessageError):
    """Neither ``recipients=`` nor the To/Cc/Bcc headers name anyone to send to."""


class NoSenderError(InvalidMessageError):
    """No envelope sender: pass ``sender=``, set ``default_sender`` or a From header."""


class NoTransactionError(MailQueueError):
    """``send()`` was called with no active transaction in an explicit manager."""


class QueueWriteError(MailQueueError, OSError):
    """Writing a message to the queue failed (full disk, I/O error, failed fsync)."""


class QueueNotFoundError(MailQueueError, FileNotFoundError):
    """``MessageQueue(path, create=False)``: there is no queue directory at ``path``."""


class CorruptMessageError(MailQueueError):
    """A queue file is truncated, foreign or fails its checksum."""


class ConfigurationError(MailQueueError, ValueError):
    """A setting is missing or has a bad value; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class UnknownQueueIdError(MailQueueError, LookupError):
    """An id given to the operator tool is not a message of this queue."""


class DaemonAlreadyRunning(MailQueueError):
    """Another ``mq-send --daemon`` holds this queue's daemon lock (``IMailQueue.daemon_lock``)."""


class QueueInUseError(MailQueueError):
    """``mq-queue import-dir``: a sender uses the queue directory to be emptied (a running
    ``mq-send --daemon``, or an ``mq-send`` delivering one of its messages); nothing moved."""


class QueueUnavailableError(MailQueueError, OSError):
    """The queue cannot be used now: its database cannot be reached (restart, fail-over,
    network), or a queue file cannot be opened or read for a reason outside the message
    (``EMFILE``, ``ENOMEM``, ``EIO``, ``EACCES``). Nothing is lost, and the same operation
    works again once the cause is gone; it is never taken as a sign of a corrupt message."""


class QueueFullError(QueueWriteError):
    """There is no room to record the outcome of a delivery (``ENOSPC``, ``EDQUOT``): the
    message is not sent now, so that a recipient is never sent it twice because its
    delivery could not be recorded. It stays queued, untouched."""
