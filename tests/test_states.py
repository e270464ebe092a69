"""The vocabulary: one definition of each state and status, equal to the strings on disk and in output."""

from __future__ import annotations

import json

from mq_transaction.states import STATE_DIRS, STATES, WAITING, MessageState, RecipientStatus


def test_states_compare_print_and_serialise_as_their_plain_strings():
    assert MessageState.DEFERRED == "deferred"
    assert str(MessageState.HELD) == f"{MessageState.HELD}" == "held"
    assert json.dumps({"state": MessageState.FAILED, "status": RecipientStatus.PENDING}) == (
        '{"state": "failed", "status": "pending"}'
    )


def test_every_state_has_exactly_one_directory_and_no_two_share_one():
    assert set(STATE_DIRS) == set(STATES)
    assert len(set(STATE_DIRS.values())) == len(STATES)
    assert STATE_DIRS[MessageState.QUEUED] == "new" and STATE_DIRS[MessageState.HELD] == "hold"


def test_waiting_states_are_those_still_to_be_delivered():
    assert set(WAITING) == {"queued", "deferred", "sending", "held"}


def test_only_pending_and_deferred_recipients_are_undelivered():
    assert [s for s in RecipientStatus if s.undelivered] == ["pending", "deferred"]
