"""A queue of 100,000 messages: ``mq-queue status`` reads a bounded number of them.

(``bench/queue_scale.py`` measures status, list and the daemon on 100,000 messages.)

Directory queue only: how many files are read (the database queue's listing is one
indexed query).
"""

from __future__ import annotations

import os
import time

from mq_transaction import MessageQueue, queue_admin, queuefile
from mq_transaction.queue import new_queue_id
from mq_transaction.queuefile import Attempt, Envelope
from mq_transaction.states import AttemptResult


def write_message(
    queue: MessageQueue, state_dir: str, attempts: list[dict] | None = None, changed_at: float = 0
) -> str:
    """A message file as the sender leaves one, written straight into ``state_dir``."""
    queue_id = new_queue_id()
    envelope = Envelope.new("app@example.com", ("ann@example.org", "bob@example.org"), time.time(), f"<{queue_id}@x>")
    envelope.attempts = attempts or []
    path = os.path.join(queue.path, state_dir, queue_id)
    with open(path, "wb") as handle:
        handle.write(queuefile.encode(envelope, b"Subject: x\r\n\r\nx\r\n"))
    return queue_id


def attempt(at: float, result: AttemptResult, reply: str) -> Attempt:
    return Attempt(1, at, "relay:25", {"ann@example.org": reply}, result)


def test_status_reads_a_bounded_number_of_messages_newest_change_first(tmp_path, monkeypatch):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    for _ in range(queue_admin.STATUS_READ_LIMIT + 50):
        write_message(queue, "deferred")
    time.sleep(0.05)  # the failed message changed last (its file's ctime)
    failed = write_message(queue, "failed", [attempt(time.time() - 60, AttemptResult.FAILED, "550 5.1.1 no")])
    reads = []
    real_read = queue.read
    monkeypatch.setattr(queue, "read", lambda entry: reads.append(entry.queue_id) or real_read(entry))
    status = queue_admin.queue_status(queue)
    assert status.counts["deferred"] == queue_admin.STATUS_READ_LIMIT + 50
    assert status.last_failure is not None and status.last_failure.queue_id == failed
    assert reads[0] == failed
    assert len(reads) == queue_admin.STATUS_READ_LIMIT


def test_status_stops_reading_once_no_older_change_can_hold_a_newer_event(tmp_path, monkeypatch):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    for _ in range(20):
        write_message(queue, "deferred")
    time.sleep(0.05)
    future = time.time() + 3600
    write_message(queue, "deferred", [attempt(future, AttemptResult.DEFERRED, "250 2.0.0 ok")])
    write_message(queue, "failed", [attempt(future, AttemptResult.FAILED, "550 5.1.1 no")])
    reads = []
    real_read = queue.read
    monkeypatch.setattr(queue, "read", lambda entry: reads.append(entry.queue_id) or real_read(entry))
    status = queue_admin.queue_status(queue)
    assert status.last_delivery is not None and status.last_failure is not None
    assert len(reads) == 2  # every other message changed before both events


def test_is_queue_id_agrees_with_datetime_on_every_day_and_random_times():
    """The cached day check and the string comparisons of the time say what datetime says."""
    import datetime
    import random

    from mq_transaction.queue import is_queue_id

    rng = random.Random(12)
    for year in (2024, 2025, 2026, 2100):
        for month in range(0, 14):
            for day in range(0, 33):
                hour, minute, second = rng.randrange(26), rng.randrange(62), rng.randrange(62)
                value = f"{year:04d}{month:02d}{day:02d}T{hour:02d}{minute:02d}{second:02d}123456Z-0123456789"
                try:
                    datetime.datetime(year, month, day, hour, minute, second)
                    real = True
                except ValueError:
                    real = False
                assert is_queue_id(value) is real, value
