"""The database queue's lease keeper: a thread renewing the leases of the claims a process holds.

A sender's claim on a message is a lease in its row (``lease_owner``, ``lease_until``). While
a long delivery runs, this thread renews it every third of ``mq.claim_timeout``; a sender
that dies stops renewing, and once its leases run out another sender takes the messages
(:meth:`DatabaseQueue.recover_stale_claims <mq_transaction.DatabaseQueue.recover_stale_claims>`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("mq_transaction.database_queue")


class LeaseKeeper:
    """A thread that renews this process's leases (``renew``: the ids held; it returns
    those whose lease was lost) every ``interval`` seconds (a third of the claim timeout)."""

    def __init__(self, renew: Callable[[list[str]], list[str]], interval: float) -> None:
        self.renew = renew
        self.interval = interval
        self.ids: set[str] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mq-lease-keeper", daemon=True)
        self.thread.start()

    def add(self, queue_id: str) -> None:
        """Renew ``queue_id``'s lease from now on."""
        with self.lock:
            self.ids.add(queue_id)

    def discard(self, queue_id: str) -> None:
        """Stop renewing ``queue_id``'s lease (finished, or given back)."""
        with self.lock:
            self.ids.discard(queue_id)

    def stop(self) -> None:
        """End the thread at its next wake-up."""
        self.stopped.set()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                held = sorted(self.ids)
            if not held:
                continue
            try:
                lost = self.renew(held)
            except Exception as exc:  # noqa: BLE001 - keep renewing; the next round may work
                log.warning("cannot renew the claims on %d message(s): %s", len(held), exc)
                continue
            for queue_id in lost:
                with self.lock:
                    if queue_id not in self.ids:
                        continue  # finished meanwhile
                log.error("queue id %s: this sender's claim was lost; another sender may deliver it again", queue_id)
