"""A queue holding one message in each state, built for real (mq-send against a real SMTP
server, a damaged message, a claim, a hold): the ``built`` and ``built_directory`` fixtures
and their helpers, shared by the operator library's, mq-queue's and the text formats' tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import transaction
from queue_backends import QueueBackend, queue_settings

from mq_transaction import QueuedMailer, queue_admin
from mq_transaction.records import Claim
from mq_transaction.sender import Sender
from mq_transaction.settings import parse_settings
from mq_transaction.states import MessageState

SENDER = "app@example.com"
REFUSED = "550 5.1.1 no such user"
LATER = "451 4.3.0 try again later"


def make_settings(queue, port, **extra):
    raw = {**queue_settings(queue), "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(port)}
    raw.update({f"mq.{key}": str(value) for key, value in extra.items()})
    return parse_settings(raw)


def commit(queue: Any, to: tuple[str, ...], subject: str, body: bytes = b"Hello\n") -> str:
    """Queue one message in a committed transaction; return its queue id."""
    mailer = QueuedMailer(queue, transaction_manager=transaction.TransactionManager(explicit=True))
    with mailer.transaction_manager:
        return mailer.send(f"From: {SENDER}\nTo: {', '.join(to)}\nSubject: {subject}\n\n".encode() + body)


@dataclass
class Built:
    """A queue holding one message in each state; ``ids[state]`` names it."""

    queue: Any  # a MessageQueue or a DatabaseQueue
    ids: dict[str, str]
    claim: Claim  # the sending message's claim, held by this process as a running sender would
    settings: object


def build_queue(backend: QueueBackend, sink, **settings) -> Built:
    """Make every state the way it happens: mq-send against a real SMTP server, a damaged
    message, a claim, a hold.

    - failed: ann@example.org delivered, bad@example.org refused with a 550 (partly delivered)
    - deferred: later@example.org answered 451
    - corrupt: damaged before mq-send reached it (``QueueBackend.damage``: its file lost its
      last bytes; its row's envelope is no envelope)
    - queued, held (by queue_admin.hold), sending (claimed here and kept claimed)
    """
    queue = backend.queue
    ids = {
        MessageState.FAILED: commit(queue, ("ann@example.org", "bad@example.org"), "Partly delivered"),
        MessageState.DEFERRED: commit(queue, ("later@example.org",), "Deferred"),
        MessageState.CORRUPT: commit(queue, ("cid@example.org",), "Corrupt"),
    }
    backend.damage(ids[MessageState.CORRUPT])
    sink.behaviour.rcpt_replies.update({"bad@example.org": REFUSED, "later@example.org": LATER})
    run_settings = make_settings(queue, sink.port, **settings)
    result = Sender(run_settings, queue=queue).run()
    assert (result.failed, result.deferred, result.corrupt) == (1, 1, 1)
    sink.behaviour.rcpt_replies.clear()
    ids[MessageState.QUEUED] = commit(queue, ("dan@example.org",), "Queued")
    ids[MessageState.HELD] = commit(queue, ("eve@example.org",), "Held")
    assert queue_admin.hold(queue, [ids[MessageState.HELD]])[0].done
    ids[MessageState.SENDING] = commit(queue, ("fay@example.org",), "Sending")
    claim = queue.claim(ids[MessageState.SENDING])
    assert claim is not None
    for state, queue_id in ids.items():
        assert queue.find(queue_id).state == state
    return Built(queue, ids, claim, run_settings)


@pytest.fixture
def built(queue_backend, smtp_sink):
    """A queue holding every state: the directory queue, then the database queue."""
    made = build_queue(queue_backend, smtp_sink)
    yield made
    made.claim.release()


@pytest.fixture
def built_directory(tmp_path, smtp_sink):
    """A directory queue holding every state, for what only files can do."""
    made = build_queue(QueueBackend("directory", str(tmp_path / "queue")), smtp_sink)
    yield made
    made.claim.release()
