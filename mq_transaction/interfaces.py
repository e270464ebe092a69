"""What a mailer and a queue promise, stated once (implementations live elsewhere)."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IMailer(Interface):
    """Queues ready-made messages for delivery by ``mq-send``."""

    transaction_manager = Attribute("The transaction manager whose transactions send() joins.")
    default_sender = Attribute("The envelope sender used when send() is given none, or None.")

    def send(message, sender=None, recipients=None):
        """Queue ``message`` in the current transaction and return its queue id.

        ``message`` is bytes, str, an ``email.message.Message`` or any object with a
        ``to_message()`` method. The envelope defaults to ``default_sender`` (else the
        Sender/From header) and the To, Cc and Bcc addresses; a ``to_message()`` object's
        own ``sender`` and ``send_to`` come first. The message is validated
        and written durably before this returns; it becomes deliverable if and only if
        the transaction commits. Raises ``TypeError`` for other message types, a
        ``MailQueueError`` subclass (also a ``ValueError``) naming any bad address, and
        ``QueueWriteError`` when the disk refuses the write (the transaction then cannot
        commit).
        """

    def enqueue(message, sender=None, recipients=None):
        """Like ``send()`` but durable at once, whatever any transaction does."""


class IMailQueue(Interface):
    """A queue directory: one directory per state, one atomic rename per transition."""

    path = Attribute("Absolute path of the queue directory.")

    def write_tmp(envelope, message):
        """Write a message durably into tmp/ (not yet deliverable); return its queue id."""

    def publish(queue_ids):
        """Make messages in tmp/ deliverable (rename into new/, fsync); never raises."""

    def discard_tmp(queue_ids):
        """Remove uncommitted messages from tmp/."""

    def enqueue(envelope, message):
        """write_tmp() and publish() in one step; return the queue id."""

    def cleanup_tmp(max_age):
        """Remove files left in tmp/ by killed processes, once older than max_age seconds."""
