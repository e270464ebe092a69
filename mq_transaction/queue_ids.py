"""Queue ids: making one, reading its time back, and telling one from any other file name.

A queue id is the UTC time a message was queued, to the microsecond, then 10 random hex
digits (``20261128T151136123456Z-9f3a2b1c0d``): ids sort in queueing order, and a name
that is a queue id can never name a path. Every queue (directory, database, memory) uses
these ids.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import re
import secrets
import time

#: A queue id: UTC time of queueing to the microsecond, then 10 random hex digits.
QUEUE_ID = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{10}$")


def new_queue_id(now: float | None = None) -> str:
    """Return a fresh, time-ordered queue id such as ``20261128T151136123456Z-9f3a2b1c0d``."""
    now = time.time() if now is None else now
    whole = int(now)
    micro = int((now - whole) * 1_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(whole)) + f"{micro:06d}Z-{secrets.token_hex(5)}"


def queued_time(queue_id: str) -> float:
    """The Unix time a message was queued, read from its queue id."""
    seconds = calendar.timegm(time.strptime(queue_id[:15], "%Y%m%dT%H%M%S"))
    return seconds + int(queue_id[15:21]) / 1_000_000


def is_queue_id(value: str) -> bool:
    """True when ``value`` has the form of a queue id (so it cannot name a path) and its
    time is a real one (``20261399T...`` is a stray file's name, not a message's)."""
    if not QUEUE_ID.fullmatch(value):
        return False
    return _real_day(value[0:8]) and value[9:11] < "24" and value[11:13] < "60" and value[13:15] < "60"


@functools.lru_cache(maxsize=4096)
def _real_day(day: str) -> bool:
    """True for a real calendar day ``YYYYMMDD``: cached, since a queue's ids share few days
    (``mq-queue status`` checks every name of a 100,000-message queue)."""
    try:
        datetime.date(int(day[0:4]), int(day[4:6]), int(day[6:8]))
    except ValueError:
        return False
    return True
