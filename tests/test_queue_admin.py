"""The operator's library (mq_transaction.queue_admin) on a queue holding every state, built for real.

The tests that take ``built`` (or ``queue_backend``) run on both queues, the directory queue
and the database queue; those about files (garbage in a queue file, symlinks and dot-files)
take ``built_directory`` and say why.
"""

from __future__ import annotations

import logging
import os
import time

import pytest
from built_queues import LATER, REFUSED, SENDER, build_queue, commit, make_settings
from zope.interface.verify import verifyObject

from mq_transaction import MessageQueue, UnknownQueueIdError, queue_admin
from mq_transaction.database_queue import DatabaseQueue
from mq_transaction.durations import iso_utc
from mq_transaction.interfaces import IMailQueue
from mq_transaction.memory_queue import MemoryQueue
from mq_transaction.queuefile import Envelope, encode
from mq_transaction.sender import Sender
from mq_transaction.states import STATES, MessageState


def by_id(records):
    return {record.queue_id: record for record in records}


# -- list -------------------------------------------------------------------------------


def test_list_gives_every_message_of_every_state_with_the_documented_keys(built):
    records = queue_admin.list_messages(built.queue)
    assert [r.state for r in records] == list(STATES)  # by state, in the states' order
    for record in records:
        assert tuple(record.to_json()) == queue_admin.LIST_FIELDS
        assert record.queue_id == built.ids[record.state]


def test_list_of_a_partly_delivered_failed_message_shows_each_recipients_fate(built):
    record = by_id(queue_admin.list_messages(built.queue, MessageState.FAILED))[built.ids[MessageState.FAILED]]
    assert record.recipients == (
        queue_admin.RecipientSummary("ann@example.org", "delivered", "250 2.0.0 Message accepted"),
        queue_admin.RecipientSummary("bad@example.org", "failed", REFUSED),
    )
    assert record.attempts == 1
    assert record.last_error == REFUSED
    assert record.next_attempt is None
    assert record.subject == "Partly delivered"
    assert record.sender == SENDER
    assert record.message_id.startswith("<") and record.message_id.endswith(">")
    envelope, message = built.queue.read(built.queue.find(built.ids[MessageState.FAILED]))
    assert record.size == len(message)
    assert record.queued_at == envelope.queued_at


def test_list_of_a_deferred_message_gives_its_file_time_as_next_attempt(built):
    entry = built.queue.find(built.ids[MessageState.DEFERRED])
    (record,) = queue_admin.list_messages(built.queue, MessageState.DEFERRED)
    assert record.next_attempt == entry.mtime
    assert record.next_attempt > time.time()
    assert record.last_error == LATER
    assert record.recipients[0].status == "deferred"


def test_list_of_a_corrupt_message_gives_what_can_be_known_and_why(built, queue_backend):
    (record,) = queue_admin.list_messages(built.queue, MessageState.CORRUPT)
    assert record.state == MessageState.CORRUPT
    assert record.last_error.startswith("corrupt: ")
    assert record.subject is None and record.size is None  # the message itself is not trusted
    if queue_backend.is_database:  # its envelope was damaged: nothing of it is known
        assert record.sender is None and record.recipients is None
    else:  # its file lost its last bytes: the envelope part is intact
        assert "truncated" in record.last_error
        assert record.sender == SENDER
        assert record.recipients[0].address == "cid@example.org"


def test_a_file_that_is_garbage_lists_with_nulls_and_its_queued_time_from_the_id(built_directory):
    """Directory only: a file's bytes replaced by garbage (a row cannot hold what is no envelope)."""
    built = built_directory
    queue_id = commit(built.queue, ("gus@example.org",), "Garbage")
    with open(os.path.join(built.queue.path, "new", queue_id), "wb") as handle:
        handle.write(b"\x00garbage, not a queue file\n")
    record = by_id(queue_admin.list_messages(built.queue, MessageState.QUEUED))[queue_id]
    assert record.state == MessageState.QUEUED  # a state is a directory; mq-send moves it aside when it gets there
    for key in ("attempts", "sender", "recipients", "message_id", "subject", "size"):
        assert getattr(record, key) is None, key
    assert iso_utc(record.queued_at).startswith(f"{queue_id[:4]}-{queue_id[4:6]}-{queue_id[6:8]}T")
    assert record.last_error == "corrupt: not a queue file (no MQUEUE header line)"


def test_list_of_held_queued_and_sending_messages(built):
    records = by_id(queue_admin.list_messages(built.queue))
    for state in (MessageState.HELD, MessageState.QUEUED, MessageState.SENDING):
        record = records[built.ids[state]]
        assert record.attempts == 0 and record.last_error is None and record.next_attempt is None
        assert record.recipients[0].status == "pending"


def test_subject_is_decoded_and_unfolded():
    message = b"From: a@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n and more\r\n\r\nSubject: body\r\n"
    assert queue_admin.subject(message) == "Grüße and more"
    assert queue_admin.subject(b"From: a@example.com\n\nSubject: not a header\n") is None


SUBJECT_CASES = [
    b"From: a@example.com\r\nSubject: plain\r\n",
    b"From: a@example.com\nSubject: two  spaces and a trailing one \n",
    b"subject:no space\r\nSUBJECT: second\r\n",
    b"From: a@example.com\r\nSubject:\r\n",
    b"From: a@example.com\r\nSubject: \t tab\tinside\r\n",
    b"From: a@example.com\r\nSubject: folded\r\n\tover two lines\r\n",
    b"From: a@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and =?iso-8859-1?b?5Q==?=\r\n",
    b"From: a@example.com\r\nSubject: raw \xc3\xa9 UTF-8\r\n",
    b"From: a@example.com\r\nSubject: lone\rCR\r\n",
    b"From: a@example.com\r\nSubject: bell\x07 and esc\x1b[2J\r\n",
    b"From: a@example.com\r\nnot a header line\r\nSubject: after the body started\r\n",
    b"From a@example.com Sat Nov 28 16:55:07 2026\r\nSubject: after an mbox From line\r\n",
    b" continuation first\r\nSubject: x\r\n",
    b"From: a@example.com\r\nX-Subject: not it\r\n",
    b"From: a@example.com\r\nSubject : space before the colon\r\n",
    b'From: a@example.com\r\nSubject: (comment) "quoted" a;b,c:d<e>\r\n',
    b"From: a@example.com\r\nTo: b@example.org,\r\n  c@example.org\r\nSubject: after a folded To\r\n",
    b"From: a@example.com\r\nSubject: =?bogus\r\n",
    b"Subject: no line end",
    b"",
]


@pytest.mark.parametrize("headers", SUBJECT_CASES)
def test_the_fast_subject_reader_agrees_with_the_email_package(headers):
    message = headers + b"\r\nSubject: in the body\r\n"
    assert queue_admin.subject(message) == queue_admin.parsed_subject(queue_admin.header_block(message))


def test_a_plain_subject_is_read_without_the_email_package(monkeypatch):
    monkeypatch.setattr(queue_admin, "parsed_subject", lambda block: pytest.fail("the parser was used"))
    assert queue_admin.subject(SUBJECT_CASES[0]) == "plain"
    assert queue_admin.subject(SUBJECT_CASES[1]) == "two  spaces and a trailing one "
    assert queue_admin.subject(SUBJECT_CASES[2]) == "no space"
    assert queue_admin.subject(SUBJECT_CASES[13]) is None


def test_last_error_of_an_expired_message_carries_the_expiry_note(queue_backend, smtp_sink):
    queue = queue_backend.queue
    queue_id = commit(queue, ("ann@example.org",), "Old")
    smtp_sink.behaviour.rcpt_default = LATER
    later = time.time() + 6 * 86400
    Sender(make_settings(queue, smtp_sink.port), clock=lambda: later).run()
    (record,) = queue_admin.list_messages(queue, MessageState.FAILED)
    assert record.queue_id == queue_id
    assert record.last_error.startswith(LATER) and "(expired: undelivered after" in record.last_error


# -- show -------------------------------------------------------------------------------


def test_details_hold_the_attempt_history_and_the_headers(built):
    record = queue_admin.details(built.queue, built.ids[MessageState.FAILED])
    assert record.failure_reason == "rejected"
    (attempt,) = record.attempts
    assert attempt.result == MessageState.FAILED
    assert attempt.replies == {"ann@example.org": "250 2.0.0 Message accepted", "bad@example.org": REFUSED}
    assert "Subject: Partly delivered" in record.headers
    assert any(line.startswith("Message-ID: ") for line in record.headers)


def test_raw_message_is_the_stored_message_and_a_corrupt_file_comes_whole(built):
    _envelope, message = built.queue.read(built.queue.find(built.ids[MessageState.QUEUED]))
    assert queue_admin.raw_message(built.queue, built.ids[MessageState.QUEUED]) == message
    entry = built.queue.find(built.ids[MessageState.CORRUPT])
    assert queue_admin.raw_message(built.queue, built.ids[MessageState.CORRUPT]) == built.queue.read_raw(entry)


def test_details_of_an_absent_id_is_message_not_found(built):
    with pytest.raises(queue_admin.MessageNotFoundError, match="is not in the queue"):
        queue_admin.details(built.queue, "20261128T151136123456Z-9f3a2b1c0d")


# -- ids --------------------------------------------------------------------------------

NOT_IDS = [
    "../x",
    "/etc/passwd",
    ".hidden",
    "..",
    "",
    "new/20261128T151136123456Z-9f3a2b1c0d",
    "20261128T151136123456Z-9f3a2b1c0d/../../x",
    "20261128T151136123456Z-9f3a2b1c0d\n",
    " 20261128T151136123456Z-9f3a2b1c0d",
    "20261128T151136123456Z-9F3A2B1C0D",
]


@pytest.mark.parametrize("value", NOT_IDS)
def test_anything_but_a_queue_id_is_refused_before_anything_is_read(built, value):
    with pytest.raises(UnknownQueueIdError, match="is not a queue id") as caught:
        queue_admin.check_ids(["20261128T151136123456Z-9f3a2b1c0d", value])
    assert not isinstance(caught.value, queue_admin.MessageNotFoundError)
    for act in (queue_admin.retry, queue_admin.hold, queue_admin.release, queue_admin.discard):
        with pytest.raises(UnknownQueueIdError):
            act(built.queue, [built.ids[MessageState.QUEUED], value])
    with pytest.raises(UnknownQueueIdError):
        queue_admin.details(built.queue, value)
    assert (
        built.queue.find(built.ids[MessageState.QUEUED]).state == MessageState.QUEUED
    )  # the valid id before it was not acted on


def test_nothing_outside_the_queue_is_touched_through_a_symlink_or_a_dot_file(built_directory, tmp_path):
    """Directory only: symlinks and dot-files in the queue's directories."""
    built = built_directory
    victim = tmp_path / "victim"
    victim.write_bytes(encode(Envelope.new(SENDER, ["x@example.org"], time.time(), "<v@x>"), b"Subject: v\n\nv\n"))
    fake_id = "20261128T151136123456Z-0123456789"
    os.symlink(victim, os.path.join(built.queue.path, "new", fake_id))
    with open(os.path.join(built.queue.path, "failed", "." + built.ids[MessageState.QUEUED]), "wb") as handle:
        handle.write(victim.read_bytes())
    assert fake_id not in by_id(queue_admin.list_messages(built.queue))
    (outcome,) = queue_admin.discard(built.queue, [fake_id])
    assert not outcome.done and "is not in the queue" in outcome.text
    with pytest.raises(queue_admin.MessageNotFoundError):
        queue_admin.raw_message(built.queue, fake_id)
    assert victim.exists() and os.path.islink(os.path.join(built.queue.path, "new", fake_id))
    assert len(queue_admin.list_messages(built.queue, MessageState.FAILED)) == 1  # the dot-file is no message


def test_repeated_ids_are_acted_on_once(built):
    outcomes = queue_admin.hold(built.queue, [built.ids[MessageState.QUEUED], built.ids[MessageState.QUEUED]])
    assert len(outcomes) == 1 and outcomes[0].done


# -- retry ------------------------------------------------------------------------------


def test_retry_of_a_partly_delivered_failed_message_reaches_only_the_undelivered_recipient(built, smtp_sink):
    queue_id = built.ids[MessageState.FAILED]
    (outcome,) = queue_admin.retry(built.queue, [queue_id])
    assert outcome.done and "to be sent to bad@example.org" in outcome.text
    entry = built.queue.find(queue_id)
    assert entry.state == MessageState.QUEUED
    envelope, _ = built.queue.read(entry)
    assert [(r.address, r.status) for r in envelope.recipients] == [
        ("ann@example.org", "delivered"),
        ("bad@example.org", "pending"),
    ]
    assert envelope.failure_reason is None and len(envelope.attempts) == 1  # the history stays
    Sender(built.settings, queue=built.queue).run()
    arrived = [m for m in smtp_sink.received if b"Subject: Partly delivered" in m.content]
    assert [m.rcpt_tos for m in arrived] == [["ann@example.org"], ["bad@example.org"]]
    with pytest.raises(UnknownQueueIdError):
        built.queue.find(queue_id)  # delivered to everyone: gone


def test_retry_of_a_deferred_message_makes_it_due_at_the_next_run(built, smtp_sink):
    (outcome,) = queue_admin.retry(built.queue, [built.ids[MessageState.DEFERRED]])
    assert outcome.done and outcome.text.endswith("deferred -> queued")
    assert built.queue.find(built.ids[MessageState.DEFERRED]).state == MessageState.QUEUED
    Sender(built.settings, queue=built.queue).run()  # no --flush: it is due because it is queued
    assert any(m.rcpt_tos == ["later@example.org"] for m in smtp_sink.received)


def test_retry_all_failed_and_all_deferred(built):
    outcomes = queue_admin.retry(built.queue, states=[MessageState.FAILED, MessageState.DEFERRED])
    assert [(o.queue_id, o.done) for o in outcomes] == [
        (built.ids[MessageState.FAILED], True),
        (built.ids[MessageState.DEFERRED], True),
    ]
    assert (
        queue_admin.list_messages(built.queue, MessageState.FAILED)
        == queue_admin.list_messages(built.queue, MessageState.DEFERRED)
        == []
    )


@pytest.mark.parametrize(
    ("state", "done", "says"),
    [
        (MessageState.QUEUED, True, "already queued"),
        (MessageState.HELD, False, "release it instead"),
        (MessageState.SENDING, False, "busy: a running mq-send is delivering it"),
        (MessageState.CORRUPT, False, "only discard removes it"),
    ],
)
def test_retry_in_other_states(built, state, done, says):
    (outcome,) = queue_admin.retry(built.queue, [built.ids[state]])
    assert (outcome.done, says in outcome.text) == (done, True), outcome.text
    assert built.queue.find(built.ids[state]).state == state


# -- hold and release ---------------------------------------------------------------------


@pytest.mark.parametrize("state", [MessageState.QUEUED, MessageState.DEFERRED, MessageState.FAILED])
def test_hold_keeps_a_message_aside_and_release_gives_it_back(built, state):
    queue_id = built.ids[state]
    (outcome,) = queue_admin.hold(built.queue, [queue_id])
    assert outcome.done and outcome.text.endswith(f"{state} -> held")
    assert built.queue.find(queue_id).state == MessageState.HELD
    assert queue_id not in built.queue.due(flush=True)
    (outcome,) = queue_admin.release(built.queue, [queue_id])
    # A failed message has nobody left to try: it goes back to failed, for retry to decide.
    expected = MessageState.FAILED if state == MessageState.FAILED else MessageState.QUEUED
    assert outcome.done and outcome.text.endswith(f"held -> {expected}")
    assert built.queue.find(queue_id).state == expected


@pytest.mark.parametrize(
    ("act", "state", "done", "says"),
    [
        (queue_admin.hold, MessageState.HELD, True, "already held"),
        (queue_admin.hold, MessageState.SENDING, False, "busy"),
        (queue_admin.hold, MessageState.CORRUPT, False, "only discard removes it"),
        (queue_admin.release, MessageState.QUEUED, False, "it is not held"),
        (queue_admin.release, MessageState.DEFERRED, False, "it is not held"),
        (queue_admin.release, MessageState.FAILED, False, "retry sends it again"),
        (queue_admin.release, MessageState.SENDING, False, "busy"),
        (queue_admin.release, MessageState.CORRUPT, False, "only discard removes it"),
    ],
)
def test_hold_and_release_in_other_states_change_nothing(built, act, state, done, says):
    (outcome,) = act(built.queue, [built.ids[state]])
    assert (outcome.done, says in outcome.text) == (done, True), outcome.text
    assert built.queue.find(built.ids[state]).state == state


def test_an_orphan_in_sending_is_left_to_mq_send(built):
    built.claim.release()  # its "sender" died: the file stays in sending/, unlocked
    (outcome,) = queue_admin.retry(built.queue, [built.ids[MessageState.SENDING]])
    assert not outcome.done and "its sender died" in outcome.text


def test_hold_and_release_are_logged(built, caplog):
    caplog.set_level(logging.INFO, logger="mq_transaction.operator")
    queue_admin.hold(built.queue, [built.ids[MessageState.QUEUED]])
    queue_admin.release(built.queue, [built.ids[MessageState.QUEUED]])
    assert [r.getMessage() for r in caplog.records if r.name == "mq_transaction.operator"] == [
        f"queue id {built.ids[MessageState.QUEUED]}: queued -> held (mq-queue hold)",
        f"queue id {built.ids[MessageState.QUEUED]}: held -> queued (mq-queue release)",
    ]


# -- discard ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state", [MessageState.QUEUED, MessageState.DEFERRED, MessageState.HELD, MessageState.FAILED, MessageState.CORRUPT]
)
def test_discard_removes_the_message_and_logs_what_it_removed(built, queue_backend, state, caplog):
    caplog.set_level(logging.INFO, logger="mq_transaction.operator")
    queue_id = built.ids[state]
    message_id = queue_admin.list_given(built.queue, [queue_id])[0].message_id
    (outcome,) = queue_admin.discard(built.queue, [queue_id])
    assert outcome.done
    with pytest.raises(queue_admin.MessageNotFoundError):
        queue_admin.find(built.queue, queue_id)
    (record,) = [r for r in caplog.records if r.name == "mq_transaction.operator"]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert queue_id in text and f"was {state}" in text
    if queue_backend.is_database and state == MessageState.CORRUPT:  # its envelope is what was damaged
        assert message_id is None and "Message-ID and recipients unknown" in text
        return
    assert message_id in text
    recipient = {
        MessageState.QUEUED: "dan",
        MessageState.DEFERRED: "later",
        MessageState.HELD: "eve",
        MessageState.FAILED: "bad",
        MessageState.CORRUPT: "cid",
    }[state]
    assert f"{recipient}@example.org" in text


def test_discard_leaves_a_message_a_sender_is_delivering(built):
    (outcome,) = queue_admin.discard(built.queue, [built.ids[MessageState.SENDING]])
    assert not outcome.done and "busy" in outcome.text
    assert built.queue.find(built.ids[MessageState.SENDING]).state == MessageState.SENDING


def test_one_missing_id_does_not_stop_the_others(built):
    missing = "20261128T151136123456Z-9f3a2b1c0d"
    outcomes = queue_admin.hold(built.queue, [missing, built.ids[MessageState.QUEUED]])
    assert [o.done for o in outcomes] == [False, True]
    assert "is not in the queue" in outcomes[0].text


# -- status -----------------------------------------------------------------------------


def test_status_counts_every_state_and_finds_the_oldest_and_the_last_events(built):
    report = queue_admin.queue_status(built.queue)
    assert report.counts == dict.fromkeys(STATES, 1)
    assert report.total == 6
    assert report.oldest.queue_id == built.ids[MessageState.DEFERRED]  # the oldest still to be delivered
    assert report.oldest.age_seconds >= 0
    assert report.last_delivery.queue_id == built.ids[MessageState.FAILED]  # ann@example.org got it
    assert report.last_delivery.source == "queue"
    assert report.last_failure == queue_admin.LastEvent(
        queue_admin.details(built.queue, built.ids[MessageState.FAILED]).attempts[-1].at,
        built.ids[MessageState.FAILED],
        "queue",
    )
    assert report.over_warn_age == 0 and report.warn_age_seconds is None


def test_status_counts_waiting_messages_older_than_the_warning_age(built):
    later = time.time() + 3600
    report = queue_admin.queue_status(built.queue, warn_age=1800, now=later)
    assert report.over_warn_age == 4  # queued, deferred, sending, held; not failed or corrupt
    assert queue_admin.queue_status(built.queue, warn_age=1800).over_warn_age == 0


def test_status_of_an_empty_queue(queue_backend):
    report = queue_admin.queue_status(queue_backend.queue)
    assert report.total == 0
    assert report.oldest is report.last_delivery is report.last_failure is None


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_status_reads_the_last_delivery_from_the_delivery_log(queue_backend, tmp_path, smtp_sink, fmt):
    log_file = tmp_path / "delivery.log"
    made = build_queue(queue_backend, smtp_sink, delivery_log=log_file, delivery_log_format=fmt)
    try:
        gone = commit(made.queue, ("zed@example.org",), "Delivered and gone")
        Sender(made.settings, queue=made.queue).run()
        report = queue_admin.queue_status(made.queue, delivery_log=str(log_file), log_format=fmt)
        assert report.last_delivery.queue_id == gone
        assert report.last_delivery.source == "delivery_log"
        assert report.last_failure.queue_id == made.ids[MessageState.FAILED]
        assert (
            queue_admin.queue_status(made.queue).last_delivery.queue_id == made.ids[MessageState.FAILED]
        )  # the queue alone
    finally:
        made.claim.release()


# -- every queue implementation -----------------------------------------------------------


@pytest.fixture(params=["directory", "memory", "database"])
def any_queue(request, tmp_path):
    """Each IMailQueue implementation: the directory queue, the in-memory one, PostgreSQL."""
    if request.param == "directory":
        yield MessageQueue(tmp_path / "queue")
    elif request.param == "memory":
        yield MemoryQueue()
    else:
        queue = DatabaseQueue(request.getfixturevalue("postgres_url"), claim_timeout=30)
        queue.init_db()
        yield queue
        queue.dispose()


def test_the_operator_commands_work_on_every_queue_implementation(any_queue):
    verifyObject(IMailQueue, any_queue)
    message = b"From: app@example.com\r\nTo: a@example.org\r\nSubject: Hello\r\n\r\nHi\r\n"
    first = any_queue.enqueue(Envelope.new(SENDER, ["a@example.org"], time.time(), "<1@example.com>"), message)
    second = any_queue.enqueue(Envelope.new(SENDER, ["b@example.org"], time.time(), "<2@example.com>"), message)
    listed = by_id(queue_admin.list_messages(any_queue))
    assert set(listed) == {first, second}
    assert listed[first].state == MessageState.QUEUED and listed[first].subject == "Hello"
    assert listed[first].size == len(message) and listed[first].last_error is None
    assert listed[second].recipients == (queue_admin.RecipientSummary("b@example.org", "pending", None),)
    assert queue_admin.raw_message(any_queue, first) == message
    details = queue_admin.details(any_queue, first)
    assert details.headers == ("From: app@example.com", "To: a@example.org", "Subject: Hello")
    assert details.problem is None and details.attempts == ()
    (held,) = queue_admin.hold(any_queue, [first])
    assert held.done and held.text.endswith("queued -> held")
    status = queue_admin.queue_status(any_queue)
    assert status.counts[MessageState.HELD] == status.counts[MessageState.QUEUED] == 1
    assert status.total == 2 and status.not_messages == () and status.oldest is not None
    (released,) = queue_admin.release(any_queue, [first])
    assert released.done and released.text.endswith("held -> queued")
    (discarded,) = queue_admin.discard(any_queue, [second])
    assert discarded.done and "<2@example.com>" in discarded.text and "b@example.org (pending)" in discarded.text
    assert [r.queue_id for r in queue_admin.list_messages(any_queue)] == [first]
    with pytest.raises(queue_admin.MessageNotFoundError):
        queue_admin.details(any_queue, second)
