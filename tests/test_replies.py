"""What SMTP replies mean: pure functions, called with a code and a text."""

from __future__ import annotations

import pytest

from mq_transaction.replies import (
    Reply,
    is_relay_refusal,
    is_too_many_recipients,
    mail_from_concerns_message,
    recipient_status,
    reply_class,
)


@pytest.mark.parametrize(
    ("code", "text", "status"),
    [
        (250, "2.1.5 OK", "delivered"),
        (251, "User not local; will forward", "delivered"),
        (450, "4.2.0 mailbox busy", "deferred"),
        (451, "4.3.0 local error", "deferred"),
        (452, "4.5.3 too many recipients", "deferred"),
        (552, "5.5.3 Too many recipients", "deferred"),
        (552, "too many recipients in this message", "deferred"),
        (552, "5.3.4 message too big", "failed"),
        (550, "5.1.1 no such user", "failed"),
        (554, "5.7.1 rejected", "failed"),
    ],
)
def test_recipient_status_by_reply(code, text, status):
    assert recipient_status(Reply(code, text)) == status


def test_too_many_recipients_needs_552():
    assert is_too_many_recipients(Reply(552, "5.5.3 too many"))
    assert not is_too_many_recipients(Reply(550, "5.5.3 too many recipients"))


@pytest.mark.parametrize(
    ("code", "text", "about_message"),
    [
        (553, "5.1.8 sender domain does not exist", True),
        (550, "5.1.7 bad sender mailbox", True),
        (552, "5.3.4 message size exceeds fixed limit", True),
        (552, "message too large", True),
        (530, "5.7.0 authentication required", False),
        (550, "5.7.1 relaying denied", False),
        (554, "transaction failed", False),
    ],
)
def test_mail_from_5xx_fails_the_message_only_when_it_is_about_the_message(code, text, about_message):
    assert mail_from_concerns_message(Reply(code, text)) is about_message


def test_enhanced_status_and_str():
    reply = Reply(550, "5.1.1 <a@b>: Recipient address rejected:\nUser unknown")
    assert reply.enhanced == "5.1.1"
    assert str(reply) == "550 5.1.1 <a@b>: Recipient address rejected: User unknown"
    assert Reply(250, "OK").enhanced is None


@pytest.mark.parametrize(("code", "label"), [(250, "2xx"), (451, "4xx"), (554, "5xx"), (-1, "other")])
def test_reply_class(code, label):
    assert reply_class(code) == label


def test_530_to_rcpt_defers_the_recipient():
    assert recipient_status(Reply(530, "5.7.0 Authentication required")) == "deferred"


RELAY_DENIED = Reply(554, "5.7.1 <ann@example.org>: Relay access denied")
AUTH_REQUIRED = Reply(530, "5.7.0 Authentication required")
UNKNOWN_USER = Reply(550, "5.1.1 no such user")


@pytest.mark.parametrize(
    ("replies", "authenticated", "relay_refusal"),
    [
        ([RELAY_DENIED, RELAY_DENIED], False, True),
        ([RELAY_DENIED], True, False),  # authenticated: the refusal is about the recipient
        ([AUTH_REQUIRED], False, True),
        ([AUTH_REQUIRED], True, True),
        ([RELAY_DENIED, UNKNOWN_USER], False, False),  # not every refusal is 5.7.x
        ([RELAY_DENIED, Reply(250, "2.1.5 OK")], False, False),  # someone was accepted
        ([RELAY_DENIED, Reply(451, "4.3.0 later")], False, False),
        ([AUTH_REQUIRED, Reply(250, "2.1.5 OK")], False, False),
        ([Reply(554, "Relay access denied")], False, False),  # no enhanced code: no rule
        ([], False, False),
    ],
)
def test_relay_refusal_rule(replies, authenticated, relay_refusal):
    assert is_relay_refusal(replies, authenticated) is relay_refusal
