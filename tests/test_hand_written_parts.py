"""The hand-written parts agree with what they stand in for (issue 8).

Each is kept for a measured reason written beside it: the inotify binding
(``watcher.py``) against the kernel's own events, the envelope JSON writer
(``queuefile.py``) against ``json.dumps``, and the address fast path (``addresses.py``)
against the ``email.utils`` path it short-cuts.

Queue-independent, except the inotify binding, which only the directory queue uses.
"""

from __future__ import annotations

import json
import os
import random
import select
import struct

import pytest
import transaction

from mq_transaction import MessageQueue, QueuedMailer
from mq_transaction.durations import iso_utc
from mq_transaction.errors import InvalidAddressError
from mq_transaction.queuefile import Attempt, Envelope, Recipient
from mq_transaction.states import AttemptResult, RecipientStatus

# -- the inotify binding against the kernel ---------------------------------------------

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
IN_MOVED_TO, IN_CREATE = 0x80, 0x100  # <sys/inotify.h>


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def events(fd: int) -> list[tuple[int, str]]:
    """The pending inotify events as (mask, name), decoded as the kernel lays them out."""
    data, found = os.read(fd, 65536), []
    offset = 0
    while offset < len(data):
        _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0").decode()
        found.append((mask, name))
        offset += _EVENT.size + length
    return found


@pytest.fixture
def wake_pipe():
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    yield read_end
    os.close(read_end)
    os.close(write_end)


def test_the_kernel_reports_a_committed_message_to_the_watcher_as_a_rename_into_new(tmp_path, wake_pipe):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    mailer = QueuedMailer(queue, default_sender="app@example.com")
    watcher = queue.watch(wake_pipe, 60.0)
    try:
        assert watcher.mode == "inotify"  # Linux: the binding works, no silent fallback to polling
        with transaction.manager:
            queue_id = mailer.send(b"To: bob@example.com\r\n\r\nHi\r\n")
            assert not readable(watcher.fd)  # written into tmp/: nothing to wake for yet
        assert readable(watcher.fd)  # queued by the rename in tpc_finish, before commit() returns
        assert events(watcher.fd) == [(IN_MOVED_TO, queue_id)]
    finally:
        watcher.close()


def test_the_watcher_wakes_for_a_file_created_in_new_and_drains_what_it_read(tmp_path, wake_pipe):
    queue = MessageQueue(tmp_path / "queue", fsync=False)
    watcher = queue.watch(wake_pipe, 60.0)
    new = tmp_path / "queue" / "new"
    try:
        os.rename(tmp_path / "queue" / "tmp", tmp_path / "tmp-moved")  # elsewhere: not reported
        os.rename(tmp_path / "tmp-moved", tmp_path / "queue" / "tmp")
        assert not readable(watcher.fd)
        (new / "a").write_bytes(b"")
        (new / "b").write_bytes(b"")
        assert readable(watcher.fd)
        watcher.wait(60.0)  # returns at once: the events are pending
        assert not readable(watcher.fd)  # and read them all, so the next wait blocks again
        (new / "c").write_bytes(b"")
        assert [(mask & IN_CREATE, name) for mask, name in events(watcher.fd)] == [(IN_CREATE, "c")]
    finally:
        watcher.close()


# -- the envelope JSON writer against json.dumps -------------------------------------------

_CHARS = 'aZ09@.<>"\\/ \t\r\n\x00\x01\x1f\x7f\x80\u00e9\u2028\u2029\ufeff\u4f8b\U0001f4e7'


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_CHARS) for _ in range(rng.randrange(0, 12)))


def _random_envelope(rng: random.Random) -> Envelope:
    recipients = [
        Recipient(_text(rng) + "@x", rng.choice(list(RecipientStatus)), rng.choice([None, _text(rng)]))
        for _ in range(rng.randrange(1, 5))
    ]
    attempts = [
        Attempt(
            number=rng.randrange(1, 10**6),
            at=rng.uniform(0, 2e9),
            server=_text(rng),
            replies={_text(rng) + "@x": _text(rng) for _ in range(rng.randrange(0, 3))},
            result=rng.choice(list(AttemptResult)),
            next_attempt=rng.choice([None, rng.uniform(0, 2e9)]),
        )
        for _ in range(rng.randrange(0, 3))
    ]
    return Envelope(
        sender=_text(rng),
        recipients=recipients,
        queued_at=rng.uniform(0, 2e9),
        message_id=_text(rng),
        attempts=attempts,
        failure_reason=rng.choice([None, "rejected", "expired", _text(rng)]),
        next_attempt=rng.choice([None, rng.uniform(0, 2e9)]),
    )


def test_the_envelope_writer_writes_exactly_what_json_dumps_writes_for_random_envelopes():
    rng = random.Random(8259)
    for _ in range(1500):
        env = _random_envelope(rng)
        expected = {
            "sender": env.sender,
            "recipients": [{"address": r.address, "status": r.status, "reply": r.reply} for r in env.recipients],
            "queued_at": iso_utc(env.queued_at),
            "message_id": env.message_id,
            "attempts": [a.to_record() for a in env.attempts],
            "failure_reason": env.failure_reason,
            "next_attempt": None if env.next_attempt is None else iso_utc(env.next_attempt),
        }
        written = env.to_json()
        assert written == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
        assert b"\n" not in written  # one line: the file format's first line ends at the first newline
        assert Envelope.from_json(written).to_json() == written


# -- the address fast path against the email.utils path ---------------------------------


def _outcome(parse, value):
    try:
        return parse([value], "To")
    except InvalidAddressError:
        return InvalidAddressError


def test_addresses_from_headers_gives_the_same_addresses_and_errors_with_and_without_the_fast_path(monkeypatch):
    from mq_transaction import addresses

    rng = random.Random(5322)
    pieces = [
        "a@b.example",
        "Bob <bob@x.example>",
        "B o b<c@d.example>",
        " e@f.example ",
        "\u00e9@\u00e9.example",
        '"Quoted" <q@r.example>',
        '"Doe, J" <j@d.example>',
        '"" <e@m.example>',
    ]
    noise = ' ,<>@"().;:\\[]\t\r\n\u00a0\u2028\u2029\u202e\x85x\u00e9=?'
    values = []
    for _ in range(3000):
        value = list(",".join(rng.choice(pieces) for _ in range(rng.randrange(1, 4))))
        for _ in range(rng.choice([0, 0, 1, 2])):
            value.insert(rng.randrange(len(value) + 1), rng.choice(noise))
        values.append("".join(value))
    fast = [_outcome(addresses.addresses_from_headers, value) for value in values]
    monkeypatch.setattr(addresses, "_plain_addresses", lambda value: None)  # every value through email.utils
    slow = [_outcome(addresses.addresses_from_headers, value) for value in values]
    assert fast == slow
    assert sum(isinstance(found, list) for found in fast) > 1000  # most values were addresses, not errors
