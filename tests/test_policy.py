"""The retry and expiry policy: where a message goes after an attempt, without SMTP."""

from __future__ import annotations

import pytest

from mq_transaction.policy import RetryPolicy, Settlement, attempts_made, expiry_note, settle
from mq_transaction.queuefile import Attempt
from mq_transaction.states import AttemptResult, FailureReason

DAY = 86400.0
POLICY = RetryPolicy(min_backoff=300.0, max_backoff=3600.0, max_lifetime=5 * DAY)
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("statuses", "age", "expected"),
    [
        (["delivered"], 0.0, Settlement("delivered")),
        (["delivered", "delivered"], 10 * DAY, Settlement("delivered")),
        (["failed"], 0.0, Settlement("failed", FailureReason.REJECTED)),
        (["delivered", "failed"], 0.0, Settlement("failed", FailureReason.REJECTED)),
        (["deferred"], 0.0, Settlement("deferred", next_attempt=NOW + 300.0)),
        (["deferred"], 1000.0, Settlement("deferred", next_attempt=NOW + 1000.0)),
        (["deferred"], 2 * DAY, Settlement("deferred", next_attempt=NOW + 3600.0)),
        (["pending", "delivered"], 0.0, Settlement("deferred", next_attempt=NOW + 300.0)),
        # a refused recipient beside a deferred one: the message waits for the deferred one
        (["failed", "deferred"], 0.0, Settlement("deferred", next_attempt=NOW + 300.0)),
        (["deferred"], 5 * DAY, Settlement("failed", FailureReason.EXPIRED)),
        (["delivered", "deferred"], 6 * DAY, Settlement("failed", FailureReason.EXPIRED)),
        (["failed", "deferred"], 5 * DAY, Settlement("failed", FailureReason.EXPIRED)),
        (["deferred"], 5 * DAY - 1, Settlement("deferred", next_attempt=NOW + 3600.0)),
    ],
)
def test_settle_by_recipient_statuses_and_age(statuses, age, expected):
    assert settle(statuses, NOW - age, NOW, POLICY) == expected


def test_only_expiry_marks_the_undelivered_recipients_failed():
    assert settle(["deferred"], NOW - 6 * DAY, NOW, POLICY).expired
    assert not settle(["failed"], NOW, NOW, POLICY).expired


@pytest.mark.parametrize(("age", "backoff"), [(0, 300), (299, 300), (301, 301), (3599, 3599), (3601, 3600)])
def test_backoff_is_the_age_between_minimum_and_maximum(age, backoff):
    assert POLICY.backoff(age) == backoff


def test_expiry_note_keeps_the_last_reply():
    assert expiry_note("451 4.3.0 later", 5 * DAY) == "451 4.3.0 later (expired: undelivered after 5.0 days)"
    assert expiry_note(None, 6 * DAY) == "(expired: undelivered after 6.0 days)"


def test_attempts_made_is_the_number_of_the_last_recorded_attempt():
    def attempt(number):
        return Attempt(number=number, at=0.0, server="s:25", replies={}, result=AttemptResult.DEFERRED)

    assert attempts_made([]) == 0
    assert attempts_made([attempt(12), attempt(13)]) == 13  # older attempts were trimmed
