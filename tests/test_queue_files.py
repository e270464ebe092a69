"""The queue on disk: the file format, the directory layout, modes and clean-up.

Directory queue only: its files and directories.
"""

from __future__ import annotations

import os
import stat
import time

import pytest

from mq_transaction import CorruptMessageError, MessageQueue, QueueWriteError, UnknownQueueIdError
from mq_transaction.durations import iso_utc
from mq_transaction.queue import is_queue_id, new_queue_id
from mq_transaction.queuefile import Attempt, Envelope, decode, decode_envelope_only, encode
from mq_transaction.states import AttemptResult

MESSAGE = b"From: app@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"


def envelope(*recipients: str) -> Envelope:
    return Envelope.new("app@example.com", recipients or ("bob@example.com",), 1795878696.123456, "<id@x>")


def small_file() -> bytes:
    return encode(envelope(), MESSAGE)


# -- the file format -------------------------------------------------------------------


def test_encode_then_decode_returns_the_envelope_and_the_exact_message():
    original = envelope("bob@example.com", "ßtraße@bücher.example", '"odd,name"@example.com')
    got_envelope, got_message = decode(encode(original, MESSAGE))
    assert got_message == MESSAGE
    assert got_envelope == original


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"sender": 'odd"name\\@example.com', "message_id": "<\u00e9\u2028\x00@x>"},
        {
            "attempts": [
                Attempt(
                    1,
                    1795878896.25,
                    "mx:25",
                    {"bob@example.com": "451 4.3.0 try later"},
                    AttemptResult.DEFERRED,
                    1795878999.5,
                )
            ],
            "next_attempt": 1795878999.5,
        },
        {"failure_reason": "rejected"},
    ],
)
def test_envelope_json_is_exactly_what_json_dumps_writes(changes):
    import json

    env = envelope("bob@example.com", "ßtraße@bücher.example")
    env.recipients[1].status, env.recipients[1].reply = "failed", '550 5.1.1 "no such user"\r\n'
    for name, value in changes.items():
        setattr(env, name, value)
    expected = {
        "sender": env.sender,
        "recipients": [{"address": r.address, "status": r.status, "reply": r.reply} for r in env.recipients],
        "queued_at": iso_utc(env.queued_at),
        "message_id": env.message_id,
        "attempts": [a.to_record() for a in env.attempts],
        "failure_reason": env.failure_reason,
        "next_attempt": None if env.next_attempt is None else iso_utc(env.next_attempt),
    }
    assert env.to_json() == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
    assert Envelope.from_json(env.to_json()).to_json() == env.to_json()


def test_message_is_stored_verbatim_and_contiguous_after_the_envelope_line():
    content = small_file()
    assert content.startswith(b"MQUEUE 1 ")
    assert content.endswith(MESSAGE)
    assert content.count(MESSAGE) == 1
    # The envelope is one line of JSON, never a header of the message.
    first, envelope_line, rest = content.split(b"\n", 2)
    assert envelope_line.startswith(b"{") and envelope_line.endswith(b"}")
    assert rest == MESSAGE


def test_envelope_only_reads_the_envelope_from_the_first_bytes():
    content = encode(envelope("a@example.com", "b@example.com"), b"x" * 100_000)
    assert [r.address for r in decode_envelope_only(content[:4096]).recipients] == [
        "a@example.com",
        "b@example.com",
    ]


def test_every_truncation_of_a_file_is_corrupt():
    content = small_file()
    for length in range(len(content)):
        with pytest.raises(CorruptMessageError):
            decode(content[:length])


@pytest.mark.parametrize("extra", [b"x", b"\n", b"\r\n", b"\0" * 4096])
def test_a_file_with_bytes_appended_is_corrupt(extra):
    with pytest.raises(CorruptMessageError):
        decode(small_file() + extra)


def test_every_single_bit_flip_anywhere_in_a_file_is_corrupt():
    content = small_file()
    for position in range(len(content)):
        for bit in range(8):
            damaged = bytearray(content)
            damaged[position] ^= 1 << bit
            with pytest.raises(CorruptMessageError):
                decode(bytes(damaged))


@pytest.mark.parametrize(
    "foreign",
    [
        b"",
        b"\n",
        MESSAGE,
        b"X-Actually-From: app@example.com\nX-Actually-To: bob@example.com\n" + MESSAGE,
        b"X-Zope-From: app@example.com\nX-Zope-To: bob@example.com\n" + MESSAGE,
        b'{"sender": "app@example.com"}\n',
        b"MQUEUE\n",
        b"MQUEUE 1 2 3\n{}\n",
        b"MQUEUE 1 x y z\n",
        bytes(range(256)) * 4,
    ],
    ids=[
        "empty",
        "newline",
        "bare-message",
        "repoze",
        "zope",
        "json",
        "magic-only",
        "short-header",
        "junk-header",
        "binary",
    ],
)
def test_a_foreign_file_is_corrupt(foreign):
    with pytest.raises(CorruptMessageError):
        decode(foreign)


def test_a_newer_format_version_is_corrupt_and_says_so():
    content = small_file().replace(b"MQUEUE 1 ", b"MQUEUE 2 ", 1)
    with pytest.raises(CorruptMessageError, match="version 2"):
        decode(content)


def test_an_envelope_that_is_valid_json_but_not_an_envelope_is_corrupt():
    import zlib

    for env in (b"{}", b'{"sender":"a@b","recipients":[],"queued_at":"2026-01-01T00:00:00Z"}', b"[1]"):
        crc = zlib.crc32(MESSAGE, zlib.crc32(env))
        content = b"MQUEUE 1 %d %d %08x\n%s\n%s" % (len(env), len(MESSAGE), crc, env, MESSAGE)
        with pytest.raises(CorruptMessageError, match="envelope"):
            decode(content)


def test_claiming_a_corrupt_file_moves_it_to_corrupt_instead_of_sending_it(mail_queue):
    queue_id = new_queue_id()
    with open(os.path.join(mail_queue.path, "new", queue_id), "wb") as handle:
        handle.write(small_file()[:-3])
    assert mail_queue.due() == [queue_id]
    with pytest.raises(CorruptMessageError, match=queue_id):
        mail_queue.claim(queue_id)
    assert os.listdir(os.path.join(mail_queue.path, "corrupt")) == [queue_id]
    assert mail_queue.due() == []


# -- queue ids ---------------------------------------------------------------------------


def test_queue_ids_are_unique_time_ordered_and_cannot_name_a_path():
    ids = [new_queue_id(1795878696.0 + n / 1000) for n in range(1000)]
    assert len(set(ids)) == 1000
    assert [i[:22] for i in ids] == sorted(i[:22] for i in ids)
    assert all(is_queue_id(i) for i in ids)
    assert ids[0].startswith("20261128T")
    for bad in ("../new/x", "", ".hidden", "20261128T151136123456Z-9f3a2b1c0d/..", "x" * 33):
        assert not is_queue_id(bad)


@pytest.mark.parametrize(
    "name",
    [
        "20261399T151136123456Z-9f3a2b1c0d",  # month 13
        "20260230T151136123456Z-9f3a2b1c0d",  # 30 February
        "20261128T251136123456Z-9f3a2b1c0d",  # hour 25
        "20261128T151136123456Z-9f3a2b1c0d\n",  # a trailing line break
    ],
)
def test_an_id_shaped_name_with_an_impossible_time_is_no_queue_id(name):
    assert not is_queue_id(name)


def test_enqueue_returns_the_name_of_the_file_in_new(mail_queue):
    queue_id = mail_queue.enqueue(envelope(), MESSAGE)
    assert os.listdir(os.path.join(mail_queue.path, "new")) == [queue_id]
    assert mail_queue.find(queue_id).state == "queued"
    assert mail_queue.read(mail_queue.find(queue_id)) == (envelope(), MESSAGE)


# -- readers ignore dot-files and anything not a regular file -----------------------


def test_due_and_entries_ignore_dot_files_directories_symlinks_and_fifos(mail_queue):
    queue_id = mail_queue.enqueue(envelope(), MESSAGE)
    new = os.path.join(mail_queue.path, "new")
    with open(os.path.join(new, ".hidden"), "wb") as handle:
        handle.write(small_file())
    with open(os.path.join(new, f".{queue_id}.rewrite"), "wb") as handle:
        handle.write(small_file())
    os.mkdir(os.path.join(new, "20261128T151136123456Z-0000000000"))
    os.symlink(os.path.join(new, queue_id), os.path.join(new, "20261128T151136123456Z-1111111111"))
    os.mkfifo(os.path.join(new, "20261128T151136123456Z-2222222222"))
    assert mail_queue.due() == [queue_id]
    assert [e.queue_id for e in mail_queue.entries()] == [queue_id]
    assert [e.queue_id for e in mail_queue.entries("queued")] == [queue_id]


def test_files_that_are_not_messages_are_not_entries_and_are_named_by_not_messages(mail_queue):
    queue_id = mail_queue.enqueue(envelope(), MESSAGE)
    hold, new = os.path.join(mail_queue.path, "hold"), os.path.join(mail_queue.path, "new")
    strays = [os.path.join(hold, "README"), os.path.join(new, "20261399T151136123456Z-9f3a2b1c0d")]
    for path in strays:
        with open(path, "wb") as handle:
            handle.write(small_file())
    os.mkdir(os.path.join(new, "20261128T151136123456Z-0000000000"))
    with open(os.path.join(new, ".scratch"), "wb") as handle:
        handle.write(small_file())
    assert [e.queue_id for e in mail_queue.entries()] == [queue_id]
    assert mail_queue.not_messages() == sorted([*strays, os.path.join(new, "20261128T151136123456Z-0000000000")])
    assert mail_queue.not_messages("held") == [strays[0]]
    with pytest.raises(UnknownQueueIdError):
        mail_queue.find("20261399T151136123456Z-9f3a2b1c0d")


def test_due_lists_deferred_messages_only_once_their_retry_time_has_come(mail_queue):
    now = time.time()
    ready, later = new_queue_id(now - 2), new_queue_id(now - 1)
    for queue_id, mtime in ((ready, now - 10), (later, now + 3600)):
        path = os.path.join(mail_queue.path, "deferred", queue_id)
        with open(path, "wb") as handle:
            handle.write(small_file())
        os.utime(path, (mtime, mtime))
    assert mail_queue.due(now) == [ready]
    assert mail_queue.due(now, flush=True) == [ready, later]


# -- cleanup of tmp/ -----------------------------------------------------------------


def test_cleanup_tmp_removes_only_tmp_files_older_than_the_max_age(mail_queue):
    now = time.time()
    max_age = 36 * 3600
    tmp = os.path.join(mail_queue.path, "tmp")
    new = os.path.join(mail_queue.path, "new")
    files = {
        "stale": (tmp, now - max_age - 60),
        "fresh": (tmp, now - max_age + 60),
        "old-mail": (new, now - 10 * max_age),
    }
    for name, (directory, mtime) in files.items():
        path = os.path.join(directory, name)
        with open(path, "wb") as handle:
            handle.write(b"x")
        os.utime(path, (mtime, mtime))
    os.mkdir(os.path.join(tmp, "old-directory"))
    os.utime(os.path.join(tmp, "old-directory"), (now - 10 * max_age,) * 2)

    assert mail_queue.cleanup(max_age, now=now) == ["stale"]
    assert sorted(os.listdir(tmp)) == ["fresh", "old-directory"]
    assert os.listdir(new) == ["old-mail"]


def test_cleanup_tmp_leaves_messages_of_open_transactions_alone(mail_queue):
    queue_id = mail_queue.stage(envelope(), MESSAGE)
    assert mail_queue.cleanup(36 * 3600) == []
    assert os.listdir(os.path.join(mail_queue.path, "tmp")) == [queue_id]


# -- layout and modes ------------------------------------------------------------------


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def strict_umask():
    """Run with umask 077, so group modes prove they are set explicitly."""
    old = os.umask(0o077)
    yield
    os.umask(old)


@pytest.fixture
def loose_umask():
    """Run with umask 000, so private modes prove they are set explicitly."""
    old = os.umask(0)
    yield
    os.umask(old)


DIRECTORIES = ["tmp", "new", "sending", "deferred", "hold", "failed", "corrupt"]


def test_queue_creates_every_state_directory(tmp_path):
    queue = MessageQueue(tmp_path / "q")
    assert sorted(os.listdir(queue.path)) == sorted(DIRECTORIES)


def test_default_modes_are_0700_for_directories_and_0600_for_files(tmp_path, loose_umask):
    queue = MessageQueue(tmp_path / "q")
    queue_id = queue.enqueue(envelope(), MESSAGE)
    assert mode(queue.path) == 0o700
    assert {d: mode(os.path.join(queue.path, d)) for d in DIRECTORIES} == dict.fromkeys(DIRECTORIES, 0o700)
    assert mode(os.path.join(queue.path, "new", queue_id)) == 0o600
    assert mode(os.path.join(queue.path, "tmp", queue.stage(envelope(), MESSAGE))) == 0o600


def test_group_access_makes_directories_0770_and_files_0660(tmp_path, strict_umask):
    queue = MessageQueue(tmp_path / "q", group_access=True)
    queue_id = queue.enqueue(envelope(), MESSAGE)
    assert mode(queue.path) == 0o770
    assert {d: mode(os.path.join(queue.path, d)) for d in DIRECTORIES} == dict.fromkeys(DIRECTORIES, 0o770)
    assert mode(os.path.join(queue.path, "new", queue_id)) == 0o660
    assert mode(os.path.join(queue.path, "tmp", queue.stage(envelope(), MESSAGE))) == 0o660


def test_opening_an_existing_queue_keeps_its_messages(tmp_path):
    first = MessageQueue(tmp_path / "q")
    queue_id = first.enqueue(envelope(), MESSAGE)
    again = MessageQueue(tmp_path / "q")
    assert again.due() == [queue_id]


def test_a_queue_path_that_is_a_file_is_a_queue_write_error(tmp_path):
    (tmp_path / "q").write_bytes(b"not a directory")
    with pytest.raises(QueueWriteError, match="not a directory"):
        MessageQueue(tmp_path / "q")


def test_create_false_refuses_a_missing_queue_directory_and_makes_nothing(tmp_path):
    from mq_transaction import QueueNotFoundError

    with pytest.raises(QueueNotFoundError, match="does not exist or is not a directory"):
        MessageQueue(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(QueueNotFoundError):
        MessageQueue(tmp_path / "a-file", create=False)


def test_create_false_opens_an_existing_directory_and_completes_its_layout(tmp_path):
    (tmp_path / "q").mkdir()
    queue = MessageQueue(tmp_path / "q", create=False)
    assert sorted(os.listdir(queue.path)) == ["corrupt", "deferred", "failed", "hold", "new", "sending", "tmp"]


# A file written before attempts were typed: the sender stored plain dicts, in this order.
OLD_ENVELOPE = (
    b'{"sender":"app@example.com","recipients":[{"address":"bob@example.com","status":"deferred",'
    b'"reply":"451 4.3.0 try later"}],"queued_at":"2026-11-28T15:11:36.123456Z","message_id":"<m@x>",'
    b'"attempts":[{"number":1,"at":"2026-11-28T15:11:37.000001Z","server":"127.0.0.1:25",'
    b'"recipients":{"bob@example.com":"451 4.3.0 try later"},"result":"deferred",'
    b'"next_attempt":"2026-11-28T15:16:37.000001Z"},{"number":2,"at":"2026-11-28T15:16:38.5Z",'
    b'"server":"127.0.0.1:25","recipients":{},"result":"deferred","next_attempt":"2026-11-28T15:21:38.5Z"}],'
    b'"failure_reason":null,"next_attempt":"2026-11-28T15:21:38.500000Z"}'
)


def test_attempts_written_as_plain_records_decode_as_typed_attempts_and_encode_the_same():
    envelope = Envelope.from_json(OLD_ENVELOPE)
    first, second = envelope.attempts
    assert first == Attempt(
        number=1,
        at=first.at,
        server="127.0.0.1:25",
        replies={"bob@example.com": "451 4.3.0 try later"},
        result=AttemptResult.DEFERRED,
        next_attempt=first.next_attempt,
    )
    assert iso_utc(first.at) == "2026-11-28T15:11:37.000001Z"
    assert second.replies == {} and iso_utc(second.at) == "2026-11-28T15:16:38.500000Z"
    assert Envelope.from_json(envelope.to_json()) == envelope
    # a record as the sender has always written it (microsecond times) is written back byte for byte
    assert (
        b'{"number":1,"at":"2026-11-28T15:11:37.000001Z","server":"127.0.0.1:25",'
        b'"recipients":{"bob@example.com":"451 4.3.0 try later"},"result":"deferred",'
        b'"next_attempt":"2026-11-28T15:16:37.000001Z"}'
    ) in envelope.to_json()


def test_an_attempt_record_of_another_shape_is_skipped_not_a_corrupt_message():
    odd = OLD_ENVELOPE.replace(b'"attempts":[', b'"attempts":[7,{"at":"yesterday"},')
    envelope = Envelope.from_json(odd)
    assert [a.number for a in envelope.attempts] == [1, 2]


# The deferred message docs/queue.md shows, as mq-send wrote it.
DOC_ENVELOPE = (
    b'{"sender":"noreply@myapp.example","recipients":[{"address":"ann@example.org","status":"delivered",'
    b'"reply":"250 2.0.0 Message accepted"},{"address":"bob@example.org","status":"deferred",'
    b'"reply":"451 4.2.0 mailbox busy, try later"}],"queued_at":"2026-11-28T16:32:12.026450Z",'
    b'"message_id":"<18ec428eb0670d49.872e3d85dff9b089@myapp.example>","attempts":[{"number":1,'
    b'"at":"2026-11-28T16:32:12.208176Z","server":"127.0.0.1:47225","recipients":{"ann@example.org":'
    b'"250 2.0.0 Message accepted","bob@example.org":"451 4.2.0 mailbox busy, try later"},"result":"deferred",'
    b'"next_attempt":"2026-11-28T16:37:12.208176Z"}],"failure_reason":null,"next_attempt":"2026-11-28T16:37:12.208176Z"}'
)


def test_the_envelope_in_the_docs_decodes_to_typed_attempts_and_encodes_byte_for_byte():
    envelope = Envelope.from_json(DOC_ENVELOPE)
    (attempt,) = envelope.attempts
    assert (attempt.number, attempt.server, attempt.result) == (1, "127.0.0.1:47225", AttemptResult.DEFERRED)
    assert attempt.replies["bob@example.org"] == "451 4.2.0 mailbox busy, try later"
    assert envelope.to_json() == DOC_ENVELOPE
