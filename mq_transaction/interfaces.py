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
    """A persistent mail queue: the one seam between everything above it and its storage.

    The data manager, ``QueuedMailer``, the sender, the daemon and the operator commands
    use a queue only through these methods, so a queue kept in a directory
    (``MessageQueue``), in a database, or in memory (for tests) is interchangeable.
    Nothing here names a path: how a state is stored is the implementation's business.

    A message has a queue id (``str``, see ``docs/queue.md``), an ``Envelope`` and its
    exact bytes. It is first *staged* (stored durably, not deliverable), then *published*
    (committed: state ``queued``) or *discarded*. Once published it moves between the
    states of :class:`mq_transaction.states.MessageState`; each move is atomic and
    durable when the method returns. A message is never lost by the queue: it leaves
    only through ``finish_delivered``, ``discard`` of a staged message, ``cleanup`` of an
    abandoned staged one, or an operator's ``remove``.

    Claims: ``claim`` (sender) and ``lock`` (operator) hand out a
    :class:`mq_transaction.records.Claim`; while it is held no other process, on this
    host or another, can claim, lock, move or remove the message. A claim is held until
    one of the methods that take it returns, or until ``Claim.release()``; a claim whose
    process died is given back by ``recover_stale_claims`` (the directory queue sees the
    dead process's lock vanish; a database queue sees its lease run out). While a claim is
    held the implementation keeps it alive by itself (renewing a lease if it has one).
    """

    location = Attribute(
        "Where the queue is, for messages to people: a directory path, or a database URL with any password masked."
    )
    claim_batch_size = Attribute(
        "How many listed messages a sender hands to one ``claim_many`` call: 1 where a claim is a cheap local "
        "step (the directory queue renames a file), more where one round trip claims many (a database queue). "
        "A sender holds the claims it took ahead until it tries them, and gives back with ``unclaim`` those "
        "it does not try (its run stops early)."
    )

    # -- the application's side: stage, then publish or discard --------------------------

    def check_writable():
        """Raise ``QueueWriteError`` (saying what is wrong) unless this process can queue mail.

        Called at start-up, so a queue the application cannot write fails the
        configuration rather than the first request.
        """

    def stage(envelope, message):
        """Store a message durably but not deliverable; return its new queue id.

        ``message`` is the exact bytes to send. When this returns, the message survives a
        crash, yet no sender will see it until ``publish``. Raises ``QueueWriteError``
        (nothing is left behind) when the storage refuses it: a full disk, an I/O error,
        a failed fsync, a lost database connection.
        """

    def publish(queue_ids):
        """Make staged messages deliverable (state ``queued``): the commit. Never raises.

        Called in ``tpc_finish``, after every participant voted, so it must not fail in a
        way that undoes anything. Returns a list of ``(queue_id, problem)`` pairs for the
        messages that could not be published durably, where ``problem`` is a sentence for
        an operator saying what failed, where the message is, and what to do to send it
        (an empty list when all went well).
        """

    def discard(queue_ids):
        """Remove staged messages (the abort, or a rollback to a savepoint).

        Ids that are already gone are fine; published messages are never touched.
        """

    def enqueue(envelope, message):
        """Stage and publish a message in one step, outside any transaction; return its id.

        Raises ``QueueWriteError`` when it is not durably queued; then nothing is left
        queued, so a caller that retries sends it once.
        """

    def cleanup(max_age, now=None):
        """Remove staged messages older than ``max_age`` seconds, and other leftovers of
        killed processes; return the queue ids (or names) removed.

        A staged message that old belongs to a process that died before its transaction
        ended; nothing else ever removes mail. ``now`` defaults to the current time.
        """

    # -- the sender's side: due, claim, finish ---------------------------------------------

    def recover_stale_claims():
        """Give the messages claimed by senders that died back to ``queued``; return their ids."""

    def due(now=None, flush=False):
        """Queue ids of the messages due for delivery at ``now``, oldest first.

        Every ``queued`` message, and every ``deferred`` one whose next attempt time has
        come (every deferred one with ``flush``). ``held``, ``failed`` and ``corrupt``
        messages are never due. The list is a snapshot: ``claim`` may find a message
        gone.
        """

    def next_retry_time():
        """The earliest next attempt time among ``deferred`` messages (Unix time), or None."""

    def claim(queue_id):
        """Claim a due message for delivery (state ``sending``); return its ``Claim``.

        Returns None when the message is no longer due or another sender holds it. A
        message that cannot be read or decoded is moved to ``corrupt`` and
        ``CorruptMessageError`` is raised, naming the queue id and the reason.
        """

    def claim_many(queue_ids):
        """Claim, as ``claim`` does, every message of ``queue_ids`` (ids from ``due``) still due
        and held by no other sender; return ``(claims, problems)``.

        ``claims`` follow the order of ``queue_ids``; ids gone or held elsewhere are skipped,
        so two senders given the same ids never both get one message. ``problems`` holds a
        ``MailQueueError`` for each message that could not be claimed for a reason of its
        own (``CorruptMessageError`` once it is in ``corrupt``, ``QueueFullError``). Raises
        ``QueueUnavailableError``, holding none of the claims, when the queue cannot be used.
        """

    def finish_delivered(claim):
        """The message reached every recipient: remove it from the queue, durably, at once."""

    def finish_deferred(claim, next_attempt):
        """Store the claim's envelope and move the message to ``deferred``, due again at
        ``next_attempt`` (Unix time), which is also recorded as ``envelope.next_attempt``."""

    def finish_failed(claim):
        """Store the claim's envelope and move the message to ``failed`` (no next attempt)."""

    def unclaim(claim, envelope_changed=False):
        """Give a claimed message back to ``queued``, due at once (it was not tried: the
        server could not be used, or the run stopped). With ``envelope_changed`` the
        claim's envelope is stored first."""

    # -- the daemon's side ------------------------------------------------------------------

    def watch(wake_fd, poll_interval):
        """Return an :class:`IMailWatcher` that wakes when mail may have been published.

        ``wake_fd`` is a readable file descriptor (the daemon's self-pipe, written by its
        signal handlers); the watcher's ``wait`` also returns when it becomes readable,
        and drains it. Where the queue cannot be told of new mail, the watcher polls every
        ``poll_interval`` seconds.
        """

    def daemon_lock():
        """Take this queue's one-daemon lock for the life of the process, or raise
        ``DaemonAlreadyRunning`` naming the queue and who holds it.

        A queue that many daemons may serve at once (a database queue) takes no lock and
        returns at once. The lock is released when the process exits.
        """

    # -- the operator's side ----------------------------------------------------------------

    def entries(state=None):
        """Every message in ``state`` (a ``MessageState``), or in every state, as ``Entry``
        records: states in the order of ``STATES``, oldest first within a state."""

    def not_messages(state=None):
        """Names of what the storage holds among the messages (of ``state``) that is no
        message: for the directory queue, the paths of stray files (``hold/README``), so an
        operator can be told. A queue that cannot hold such things returns ``[]``."""

    def find(queue_id):
        """The ``Entry`` of one message; raise ``UnknownQueueIdError`` when ``queue_id`` is
        not a queue id, or names no message of this queue (staged messages are not found)."""

    def read(entry):
        """Return ``(envelope, message)`` of a listed message without claiming it.

        Raises ``CorruptMessageError`` when it cannot be decoded, and ``OSError`` (for
        example ``FileNotFoundError``) when it left the queue or cannot be read.
        """

    def read_raw(entry):
        """The message's stored record as bytes, exactly as stored (for the directory queue,
        the whole queue file), so an operator can see what cannot be decoded. Raises like
        ``read``."""

    def lock(entry):
        """Claim a message where it lies, in any state, for an operator's change; return the
        ``Claim``, or None when a sender or another operator holds it.

        The message is not moved. A message that cannot be decoded gives a claim whose
        ``envelope`` is None. Raises ``QueueWriteError`` when it cannot be opened.
        """

    def move(claim, source, target, envelope_changed=False):
        """Move a locked message from state ``source`` to state ``target`` on an operator's
        request, then release the claim. With ``envelope_changed`` the claim's envelope is
        stored first. A move to ``queued`` makes the message due at once."""

    def remove(claim, state):
        """Remove a locked message in ``state`` for good on an operator's request, then
        release the claim."""


class ISessionMailQueue(IMailQueue):
    """A queue that can write a message through the application's own database session.

    What ``QueuedMailer(queue, session=...)`` needs (the same-transaction mode of a
    database queue): the mail row commits or rolls back with the application's rows, in
    one database commit, and no data manager of ours joins.
    """

    def insert_in_session(session, envelope, message, transaction_manager):
        """Queue a message through ``session`` (a SQLAlchemy session joined to
        ``transaction_manager`` by zope.sqlalchemy), in its database transaction; return
        the queue id. A session bound to another database than the queue's is refused with
        ``ConfigurationError``."""


class IMailWatcher(Interface):
    """What ``IMailQueue.watch`` returns: the daemon's way to sleep until there is mail."""

    mode = Attribute("How it wakes, for the daemon's start-up line: e.g. 'inotify', 'polling', 'listen'.")

    def wait(timeout):
        """Return when mail may have been published, the wake descriptor was written, or
        ``timeout`` seconds passed (whichever is first). Spurious wake-ups are allowed;
        missed ones are not (beyond the poll interval).

        Return True when the watcher has just got back the queue it had lost (a database
        queue's listening connection made again after a restart, fail-over or network
        outage): the queue can be used again, so the daemon tries it at once rather than
        at the end of its outage's backoff. Else False; a watcher that never loses its
        queue (a directory's, memory's) always returns False."""

    def close():
        """Stop watching and free what the watcher holds. Idempotent."""
