"""Shared fixtures. Queue-core fixtures first; SMTP fixtures belong further down."""

from __future__ import annotations

import logging
import os

import pytest
import transaction

from mq_transaction import MessageQueue, QueuedMailer

# -- isolation -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def restore_mq_loggers():
    """Give every test the project's loggers as it found them.

    ``mq-send`` run in-process sets the ``mq_transaction`` logger's level (``-q`` raises
    it to ERROR) and the dialog logger's propagation; left as they are, a later test's
    ``caplog`` would miss a WARNING, depending on the order the tests run in.
    """
    names = ["mq_transaction", *(n for n in logging.root.manager.loggerDict if n.startswith("mq_transaction."))]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.propagate, list(logger.handlers))
    yield
    for name, (level, propagate, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        for handler in logger.handlers[:]:
            if handler not in handlers:
                logger.removeHandler(handler)
    for name in logging.root.manager.loggerDict:
        if name.startswith("mq_transaction.") and name not in saved:
            logging.getLogger(name).setLevel(logging.NOTSET)


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


@pytest.fixture(autouse=True)
def _mq_loggers_as_they_were():
    """Give the ``mq_transaction`` loggers back as they were after each test.

    An in-process ``mq-send``/``mq-queue`` with an ini file runs ``logging.config.fileConfig``
    (through plaster), which disables every logger that exists and is not named in the file;
    ``-q`` and ``--smtp-log`` change levels and propagation. Without this, a later test that
    reads records with ``caplog`` sees none, depending on the order the tests ran in.
    """
    names = ["mq_transaction", *(n for n in logging.root.manager.loggerDict if n.startswith("mq_transaction."))]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.propagate, logger.disabled)
    yield
    for name in list(logging.root.manager.loggerDict):
        if name == "mq_transaction" or name.startswith("mq_transaction."):
            level, propagate, disabled = saved.get(name, (logging.NOTSET, True, False))
            logger = logging.getLogger(name)
            logger.setLevel(level)  # setLevel, not .level: it also clears the loggers' level cache
            logger.propagate, logger.disabled = propagate, disabled


# -- SMTP servers (tests/smtp_sinks.py) ----------------------------------------------
pytest_plugins = ["smtp_sinks", "raw_smtp", "postgres_server", "queue_backends", "built_queues"]
