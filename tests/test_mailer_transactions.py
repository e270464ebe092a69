"""QueuedMailer and its data manager under a real ``transaction`` manager: a message
reaches ``new/`` if and only if its transaction commits.

Every test that takes ``mail_queue`` or ``queue_files`` runs on both queues (``queue_backend``):
the directory queue, and the database queue in its own-connection mode (the data manager
stages a row and publishes it at the commit). ``queue_files("tmp")`` names the staged
messages (files in ``tmp/``, rows still ``staged``), ``queue_files("new")`` the published
ones.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import transaction
from queue_backends import staged
from transaction.interfaces import DoomedTransaction

from mq_transaction import (
    InvalidAddressError,
    NoTransactionError,
    QueuedMailer,
)
from mq_transaction.datamanager import MailDataManager
from mq_transaction.states import MessageState

MESSAGE = (
    b"From: App <app@example.com>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <fixed@example.com>\r\n"
    b"Date: Sat, 28 Nov 2026 15:11:36 +0000\r\n"
    b"\r\n"
    b"Hi Bob.\r\n"
)


def message_to(name: str) -> bytes:
    """A complete message to ``name``@example.com (so tests can tell messages apart)."""
    return MESSAGE.replace(b"bob@example.com", name.encode() + b"@example.com")


@pytest.fixture
def mail_queue(queue_backend):
    """The mailer's queue: the directory queue, then the database queue."""
    return queue_backend.queue


@pytest.fixture
def queue_files(mail_queue):
    """``queue_files("tmp")``: sorted ids of the staged messages; ``queue_files("new")``: of the published ones."""

    def listing(place: str) -> list[str]:
        if place == "tmp":
            return staged(mail_queue)
        assert place == "new", place
        return sorted(entry.queue_id for entry in mail_queue.entries(MessageState.QUEUED))

    return listing


def stored_recipients(mail_queue: Any, queue_id: str) -> list[str]:
    envelope, _message = mail_queue.read(mail_queue.find(queue_id))
    return [r.address for r in envelope.recipients]


class FailingDataManager:
    """Another resource in the transaction, failing in one phase of the commit."""

    def __init__(self, fail_in: str, sort_key: str) -> None:
        self.fail_in = fail_in
        self.sort_key = sort_key
        self.calls: list[str] = []

    def _phase(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_in:
            raise RuntimeError(f"{name} failed on purpose")

    def tpc_begin(self, txn):
        self._phase("tpc_begin")

    def commit(self, txn):
        self._phase("commit")

    def tpc_vote(self, txn):
        self._phase("tpc_vote")

    def tpc_finish(self, txn):
        self._phase("tpc_finish")

    def abort(self, txn):
        self.calls.append("abort")

    def tpc_abort(self, txn):
        self.calls.append("tpc_abort")

    def sortKey(self):  # noqa: N802 - the transaction API's name
        return self.sort_key

    def savepoint(self):
        raise NotImplementedError


#: Sort keys of another resource sorting before and after ours ("mq_transaction:...").
BEFORE_OURS, AFTER_OURS = "a-other", "~~~-other"


# -- commit and abort ------------------------------------------------------------------


def test_commit_moves_the_message_to_new_and_leaves_tmp_empty(queued_mailer, queue_files):
    with transaction.manager:
        queue_id = queued_mailer.send(MESSAGE)
    assert queue_files("new") == [queue_id]
    assert queue_files("tmp") == []


def test_message_waits_in_tmp_until_the_transaction_commits(queued_mailer, queue_files):
    transaction.begin()
    queue_id = queued_mailer.send(MESSAGE)
    assert queue_files("tmp") == [queue_id]
    assert queue_files("new") == []
    transaction.commit()
    assert queue_files("new") == [queue_id]


def test_committed_message_holds_the_envelope_and_the_exact_message(queued_mailer, mail_queue):
    with transaction.manager:
        queue_id = queued_mailer.send(MESSAGE, recipients=["carol@example.com"])
    envelope, message = mail_queue.read(mail_queue.find(queue_id))
    assert message == MESSAGE
    assert envelope.sender == "app@example.com"
    assert [r.address for r in envelope.recipients] == ["carol@example.com"]
    assert envelope.message_id == "<fixed@example.com>"


def test_abort_leaves_no_file_in_tmp_or_new(queued_mailer, queue_files):
    transaction.begin()
    queued_mailer.send(MESSAGE)
    queued_mailer.send(MESSAGE)
    transaction.abort()
    assert queue_files("tmp") == []
    assert queue_files("new") == []


def test_exception_in_the_with_block_leaves_no_file(queued_mailer, queue_files):
    with pytest.raises(ZeroDivisionError):
        with transaction.manager:
            queued_mailer.send(MESSAGE)
            1 / 0  # noqa: B018 - the failing request
    assert queue_files("tmp") == []
    assert queue_files("new") == []


def test_doomed_transaction_refuses_to_commit_and_its_abort_removes_the_message(queued_mailer, queue_files):
    txn = transaction.begin()
    txn.doom()
    queued_mailer.send(MESSAGE)
    with pytest.raises(DoomedTransaction):
        transaction.commit()
    assert queue_files("new") == []
    transaction.abort()
    assert queue_files("tmp") == []
    assert queue_files("new") == []


def test_transactions_are_independent_one_aborted_one_committed(queued_mailer, queue_files):
    transaction.begin()
    queued_mailer.send(message_to("lost"))
    transaction.abort()
    with transaction.manager:
        kept = queued_mailer.send(message_to("kept"))
    assert queue_files("new") == [kept]
    assert queue_files("tmp") == []


def test_enqueue_is_durable_at_once_whatever_the_transaction_does(queued_mailer, queue_files):
    transaction.begin()
    queue_id = queued_mailer.enqueue(MESSAGE)
    assert queue_files("new") == [queue_id]
    transaction.abort()
    assert queue_files("new") == [queue_id]


def test_invalid_address_raises_before_anything_is_written(queued_mailer, queue_files):
    transaction.begin()
    with pytest.raises(InvalidAddressError):
        queued_mailer.send(MESSAGE, recipients=["bob@example.com\r\nRCPT TO:<evil@example.com>"])
    transaction.commit()
    assert queue_files("tmp") == []
    assert queue_files("new") == []


def test_mailer_accepts_a_directory_path_instead_of_a_queue(tmp_path):
    """Directory only: a path is how a directory queue is named."""
    mailer = QueuedMailer(tmp_path / "by-path", default_sender="app@example.com")
    transaction.abort()
    with transaction.manager:
        queue_id = mailer.send(MESSAGE)
    assert (tmp_path / "by-path" / "new" / queue_id).is_file()


def test_one_data_manager_publishes_all_messages_of_a_transaction(queued_mailer, queue_files, monkeypatch):
    finishes = []
    original = MailDataManager.tpc_finish

    def counting_tpc_finish(self, txn):
        finishes.append(list(self.queue_ids))
        original(self, txn)

    monkeypatch.setattr(MailDataManager, "tpc_finish", counting_tpc_finish)
    with transaction.manager:
        ids = [queued_mailer.send(message_to(f"r{n}")) for n in range(3)]
    assert finishes == [ids]
    assert queue_files("new") == sorted(ids)


# -- savepoints ------------------------------------------------------------------------


def test_savepoint_rollback_removes_only_the_messages_sent_after_it(queued_mailer, queue_files):
    with transaction.manager as txn:
        kept = queued_mailer.send(message_to("kept"))
        savepoint = txn.savepoint()
        queued_mailer.send(message_to("dropped1"))
        queued_mailer.send(message_to("dropped2"))
        savepoint.rollback()
        assert queue_files("tmp") == [kept]
    assert queue_files("new") == [kept]
    assert queue_files("tmp") == []


def test_nested_savepoint_rollbacks_remove_exactly_the_later_messages(queued_mailer, queue_files):
    with transaction.manager as txn:
        first = queued_mailer.send(message_to("first"))
        outer = txn.savepoint()
        second = queued_mailer.send(message_to("second"))
        inner = txn.savepoint()
        queued_mailer.send(message_to("third"))
        inner.rollback()
        assert queue_files("tmp") == sorted([first, second])
        fourth = queued_mailer.send(message_to("fourth"))
        outer.rollback()
        assert queue_files("tmp") == [first]
        assert fourth not in queue_files("tmp")
        fifth = queued_mailer.send(message_to("fifth"))
    assert queue_files("new") == sorted([first, fifth])
    assert queue_files("tmp") == []


def test_rollback_to_a_savepoint_taken_before_the_first_send_then_sending_again_commits(queued_mailer, queue_files):
    # The data manager joined after the savepoint, so ``transaction`` rolls it back by
    # aborting and unjoining it; the mailer must join again for the next message.
    with transaction.manager as txn:
        savepoint = txn.savepoint()
        queued_mailer.send(message_to("dropped"))
        savepoint.rollback()
        assert queue_files("tmp") == []
        kept = queued_mailer.send(message_to("kept"))
    assert queue_files("new") == [kept]
    assert queue_files("tmp") == []


def test_savepoint_rolled_back_twice_after_the_first_send_keeps_later_sends(queued_mailer, queue_files):
    with transaction.manager as txn:
        savepoint = txn.savepoint()
        queued_mailer.send(message_to("dropped1"))
        savepoint.rollback()
        queued_mailer.send(message_to("dropped2"))
        savepoint.rollback()
        kept = queued_mailer.send(message_to("kept"))
    assert queue_files("new") == [kept]
    assert queue_files("tmp") == []


# -- other resources failing ---------------------------------------------------------


@pytest.mark.parametrize("sort_key", [BEFORE_OURS, AFTER_OURS], ids=["other-sorts-first", "other-sorts-last"])
@pytest.mark.parametrize("phase", ["tpc_begin", "commit", "tpc_vote"])
def test_another_resource_failing_before_the_votes_end_vetoes_the_mail(queued_mailer, queue_files, phase, sort_key):
    other = FailingDataManager(phase, sort_key)
    with pytest.raises(RuntimeError, match=f"{phase} failed on purpose"):
        with transaction.manager as txn:
            txn.join(other)
            queued_mailer.send(MESSAGE)
    assert queue_files("new") == []
    assert queue_files("tmp") == []
    assert "tpc_abort" in other.calls


def test_another_resource_failing_in_tpc_finish_after_ours_leaves_the_mail_published(
    queued_mailer, queue_files, caplog
):
    # Every vote said yes, and our tpc_finish (sorted first) already published: the
    # commit was decided. The cleanup's tpc_abort/abort must then be silent no-ops.
    other = FailingDataManager("tpc_finish", AFTER_OURS)
    with pytest.raises(RuntimeError, match="tpc_finish failed on purpose"):
        with transaction.manager as txn:
            txn.join(other)
            queue_id = queued_mailer.send(MESSAGE)
    assert queue_files("new") == [queue_id]
    assert queue_files("tmp") == []
    assert not [r for r in caplog.records if "manager" in r.getMessage() and r.levelno >= logging.ERROR]


def test_another_resource_failing_in_tpc_finish_before_ours_withdraws_the_mail(queued_mailer, queue_files):
    # Our tpc_finish never ran; ``transaction`` calls tpc_abort on us, which removes
    # the message from tmp/: nothing is left half-way.
    other = FailingDataManager("tpc_finish", BEFORE_OURS)
    with pytest.raises(RuntimeError, match="tpc_finish failed on purpose"):
        with transaction.manager as txn:
            txn.join(other)
            queued_mailer.send(MESSAGE)
    assert queue_files("new") == []
    assert queue_files("tmp") == []


def test_our_sort_key_sorts_between_the_fake_resources_used_above(queued_mailer):
    transaction.begin()
    queued_mailer.send(MESSAGE)
    manager = transaction.get().data(queued_mailer)
    assert BEFORE_OURS < manager.sortKey() < AFTER_OURS
    assert manager.sortKey() < "~sqlalchemy:1"


# -- after-commit hooks and repeated aborts ----------------------------------------


def test_after_commit_hook_abort_is_silent_and_keeps_the_message_in_new(queued_mailer, queue_files, caplog):
    hook_calls = []
    with transaction.manager as txn:
        txn.addAfterCommitHook(lambda status: hook_calls.append(status))
        queue_id = queued_mailer.send(MESSAGE)
    assert hook_calls == [True]
    assert queue_files("new") == [queue_id]
    assert queue_files("tmp") == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_send_inside_an_after_commit_hook_raises_instead_of_writing_an_orphan(queued_mailer, queue_files):
    errors = []

    def hook(status):
        try:
            queued_mailer.send(MESSAGE)
        except NoTransactionError as exc:
            errors.append(exc)

    with transaction.manager as txn:
        txn.addAfterCommitHook(hook)
    assert len(errors) == 1
    assert queue_files("tmp") == []
    assert queue_files("new") == []


PHASES = ["sent", "tpc_begin", "commit", "tpc_vote", "tpc_finish"]


@pytest.mark.parametrize("last_phase", PHASES)
def test_abort_and_tpc_abort_are_idempotent_after_every_phase(queued_mailer, queue_files, last_phase):
    txn = transaction.begin()
    queue_id = queued_mailer.send(MESSAGE)
    manager = txn.data(queued_mailer)
    for phase in PHASES[1 : PHASES.index(last_phase) + 1]:
        getattr(manager, phase)(txn)
    for _ in range(2):
        manager.abort(txn)
        manager.tpc_abort(txn)
    if last_phase == "tpc_finish":
        assert queue_files("new") == [queue_id]
    else:
        assert queue_files("new") == []
    assert queue_files("tmp") == []


# -- the explicit transaction manager ------------------------------------------------


def test_explicit_manager_is_joined_not_the_thread_local_one(mail_queue, queue_files):
    tm = transaction.TransactionManager(explicit=True)
    mailer = QueuedMailer(mail_queue, transaction_manager=tm, default_sender="app@example.com")
    transaction.abort()
    tm.begin()
    queue_id = mailer.send(MESSAGE)
    transaction.commit()  # the thread-local manager: must not publish our message
    assert queue_files("new") == []
    tm.commit()
    assert queue_files("new") == [queue_id]
    assert queue_files("tmp") == []


def test_explicit_manager_abort_removes_the_message_even_if_thread_local_commits(mail_queue, queue_files):
    tm = transaction.TransactionManager(explicit=True)
    mailer = QueuedMailer(mail_queue, transaction_manager=tm, default_sender="app@example.com")
    with transaction.manager:
        tm.begin()
        mailer.send(MESSAGE)
        tm.abort()
    assert queue_files("new") == []
    assert queue_files("tmp") == []


def test_explicit_manager_with_no_transaction_begun_raises_and_writes_nothing(mail_queue, queue_files):
    tm = transaction.TransactionManager(explicit=True)
    mailer = QueuedMailer(mail_queue, transaction_manager=tm, default_sender="app@example.com")
    with pytest.raises(NoTransactionError, match="begin"):
        mailer.send(MESSAGE)
    assert queue_files("tmp") == []
    assert queue_files("new") == []


def test_explicit_manager_after_its_transaction_committed_raises_again(mail_queue, queue_files):
    tm = transaction.TransactionManager(explicit=True)
    mailer = QueuedMailer(mail_queue, transaction_manager=tm, default_sender="app@example.com")
    with tm:
        first = mailer.send(MESSAGE)
    with pytest.raises(NoTransactionError):
        mailer.send(MESSAGE)
    assert queue_files("new") == [first]
    assert queue_files("tmp") == []


def test_explicit_manager_with_block_commits_and_aborts(mail_queue, queue_files):
    tm = transaction.TransactionManager(explicit=True)
    mailer = QueuedMailer(mail_queue, transaction_manager=tm, default_sender="app@example.com")
    with tm:
        kept = mailer.send(message_to("kept"))
    with pytest.raises(KeyError):
        with tm:
            mailer.send(message_to("dropped"))
            raise KeyError("request failed")
    assert queue_files("new") == [kept]
    assert queue_files("tmp") == []
    assert stored_recipients(mail_queue, kept) == ["kept@example.com"]
