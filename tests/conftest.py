"""Shared fixtures. Queue-core fixtures first; SMTP fixtures belong further down."""

from __future__ import annotations

import os

import pytest
import transaction

from mq_transaction import MessageQueue, QueuedMailer

# -- queue core ----------------------------------------------------------------------


@pytest.fixture
def mail_queue(tmp_path) -> MessageQueue:
    """A durable (fsync on, the default) queue in a fresh directory."""
    return MessageQueue(tmp_path / "queue")


@pytest.fixture
def queued_mailer(mail_queue) -> QueuedMailer:
    """A mailer on ``mail_queue`` joining the thread-local ``transaction.manager``.

    The thread-local transaction is aborted before and after the test, so no test
    inherits another's half-finished transaction.
    """
    transaction.abort()
    yield QueuedMailer(mail_queue, default_sender="app@example.com")
    transaction.abort()


@pytest.fixture
def queue_files(mail_queue):
    """``queue_files("new")``: sorted names of the files in one directory of ``mail_queue``."""

    def listing(directory: str) -> list[str]:
        return sorted(os.listdir(os.path.join(mail_queue.path, directory)))

    return listing


# -- SMTP servers (tests/smtp_sinks.py) ----------------------------------------------
pytest_plugins = ["smtp_sinks", "postgres_server"]
