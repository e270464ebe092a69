"""The two queues the sender, daemon, ``mq-queue`` and Pyramid tests run against: ``queue_backend``.

A test that takes ``queue_backend`` runs twice: ``[directory]`` on a
:class:`~mq_transaction.MessageQueue` in a fresh directory, ``[database]`` on a
:class:`~mq_transaction.DatabaseQueue` in a fresh PostgreSQL database of the session's
private server (``postgres_server.py``), its tables made by ``init-db``. Each database
variant has a database of its own (a copy of a template made once per run), so the tests
stay independent however they are ordered, and nothing a test left running (a killed
sender's connections) reaches the next one.

The backend gives what a test needs to name its queue in every form the code takes it:

- ``queue_backend.queue``: the queue object (``open()`` makes another on the same storage,
  as another process would);
- ``queue_backend.settings``: ``{"mq.queue_dir": DIR}`` or ``{"mq.queue_url": URL}``, the
  ini settings (``parse(...)`` makes the :class:`Settings` with more keys);
- ``queue_backend.args``: ``["--queue-dir", DIR]`` or ``["--queue-url", URL]`` for
  ``mq-send`` and ``mq-queue``;
- ``queue_backend.damage(queue_id)``: make a stored message undecodable, the way each
  storage can be damaged (a truncated file; an envelope that is no envelope).

Tests of what only a directory has (file layout, fsync, symlinks, ``tmp/`` clean-up, the
daemon's lock file, inotify) take ``mail_queue`` or ``tmp_path`` instead and say
``directory only`` in their docstring or a comment, with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from mq_transaction import MessageQueue
from mq_transaction.settings import Settings, parse_settings

#: The queue implementations a ``queue_backend`` test runs against, in order.
BACKENDS = ("directory", "database")


#: Put on a test whose database variant takes seconds: ``make test-fast`` then runs only its
#: directory variant (``make test`` runs both).
slow_on_database = pytest.mark.parametrize(
    "queue_backend", ["directory", pytest.param("database", marks=pytest.mark.slow)], indirect=True
)


def queue_settings(queue: Any) -> dict[str, str]:
    """The ini setting naming ``queue``, a directory or a database queue object."""
    url = getattr(queue, "url", None)
    if url is not None:
        return {"mq.queue_url": url}
    return {"mq.queue_dir": str(queue.path)}


def queue_args(queue: Any) -> list[str]:
    """The ``mq-send`` / ``mq-queue`` arguments naming ``queue``."""
    ((key, value),) = queue_settings(queue).items()
    return ["--queue-url" if key == "mq.queue_url" else "--queue-dir", value]


def staged(queue: Any) -> list[str]:
    """What ``queue`` holds staged (neither published nor discarded): the names of the files in
    a directory queue's ``tmp/``, the queue ids of a database queue's ``staged`` rows."""
    url = getattr(queue, "url", None)
    if url is None:
        return sorted(os.listdir(os.path.join(queue.path, "tmp")))
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        ids = connection.execute(sa.text("select queue_id from mq_messages where state = 'staged' order by 1"))
        found = list(ids.scalars())
    engine.dispose()
    return found


class QueueBackend:
    """One queue under test, with its settings, command-line arguments and queue objects."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind = kind
        #: The queue directory, or the database URL (with no password: the test server's).
        self.location = location
        self._opened: list[Any] = []
        self._queue: Any = None

    @property
    def is_database(self) -> bool:
        return self.kind == "database"

    @property
    def settings_key(self) -> str:
        """``mq.queue_dir`` or ``mq.queue_url``."""
        return "mq.queue_url" if self.is_database else "mq.queue_dir"

    @property
    def settings(self) -> dict[str, str]:
        """The ini settings naming this queue."""
        return {self.settings_key: self.location}

    @property
    def args(self) -> list[str]:
        """The ``mq-send`` / ``mq-queue`` arguments naming this queue."""
        return ["--queue-url" if self.is_database else "--queue-dir", self.location]

    def parse(self, **extra: Any) -> Settings:
        """:func:`parse_settings` of this queue's settings and ``extra`` (``smtp_port=25`` is ``mq.smtp_port``)."""
        raw = dict(self.settings)
        raw.update({f"mq.{key}": str(value) for key, value in extra.items()})
        return parse_settings(raw)

    def open(self, **options: Any) -> Any:
        """A new queue object on this storage (disposed of after the test)."""
        if self.is_database:
            from mq_transaction import DatabaseQueue

            queue = DatabaseQueue(self.location, **options)
        else:
            queue = MessageQueue(self.location, **options)
        self._opened.append(queue)
        return queue

    @property
    def queue(self) -> Any:
        """The test's queue object (one per test)."""
        if self._queue is None:
            self._queue = self.open()
        return self._queue

    def damage(self, queue_id: str) -> None:
        """Make the stored message ``queue_id`` impossible to decode, wherever it lies."""
        if self.is_database:
            import sqlalchemy as sa

            engine = sa.create_engine(self.location, poolclass=sa.pool.NullPool)
            with engine.begin() as connection:
                connection.execute(
                    sa.text("""update mq_messages set envelope = '{"sender": 1}' where queue_id = :id"""),
                    {"id": queue_id},
                )
            engine.dispose()
            return
        for directory, _dirs, files in os.walk(self.location):
            if queue_id in files:
                path = os.path.join(directory, queue_id)
                with open(path, "r+b") as handle:
                    handle.truncate(os.path.getsize(path) - 5)
                return
        raise AssertionError(f"no file of {queue_id} under {self.location}")

    def close(self) -> None:
        """Free what every queue object opened here holds (descriptors, connections)."""
        for queue in self._opened:
            free = getattr(queue, "dispose", None) or getattr(queue, "close", None)
            if free is not None:
                free()
        self._opened.clear()


@pytest.fixture(params=BACKENDS)
def queue_backend(request, tmp_path) -> Iterator[QueueBackend]:
    """Each queue in turn: a fresh directory, then a fresh database with the tables."""
    if request.param == "database":
        backend = QueueBackend("database", request.getfixturevalue("postgres_queue_url"))
    else:
        backend = QueueBackend("directory", str(tmp_path / "queue"))
        MessageQueue(backend.location)  # the directories exist, as they do once an app started
    try:
        yield backend
    finally:
        backend.close()
