"""What an SMTP reply means for a recipient, a message or the server: pure functions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .states import RecipientStatus

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: its code and its text (lines joined by newlines)."""

    code: int
    text: str = ""

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code (``5.1.1``) at the start of the text, if any."""
        match = _ENHANCED.match(self.text)
        return match.group(0) if match else None

    def __str__(self) -> str:
        return f"{self.code} {' '.join(self.text.split())}".strip()


def recipient_status(reply: Reply) -> RecipientStatus:
    """``delivered``, ``deferred`` or ``failed`` for a reply to RCPT TO or to the final dot.

    2xx delivered; 4xx deferred; 552 "too many recipients" (RFC 5321 4.5.3.1.10, often
    sent with 5.5.3) is temporary too, and so is 530 "authentication required" (RFC 4954:
    about our configuration, never about the recipient); any other 5xx fails the
    recipient for good.
    """
    if 200 <= reply.code < 300:
        return RecipientStatus.DELIVERED
    if 400 <= reply.code < 500 or is_too_many_recipients(reply) or reply.code == AUTH_REQUIRED:
        return RecipientStatus.DEFERRED
    return RecipientStatus.FAILED


#: RFC 4954: "530 5.7.0 Authentication required".
AUTH_REQUIRED = 530


def is_relay_refusal(replies: Sequence[Reply], authenticated: bool) -> bool:
    """True when the RCPT replies of one transaction say the server will not relay for us.

    That is a problem of our configuration (credentials, TLS), not of the recipients:
    the rule holds when no recipient was accepted or deferred and either a reply is
    ``530`` (authentication required), or we are not authenticated and every recipient
    was refused with a ``5.7.x`` (security or policy) enhanced code, as in Postfix's
    ``554 5.7.1 <ann@example.org>: Relay access denied``.
    """
    if not replies or any(reply.code < 500 for reply in replies):
        return False
    if any(reply.code == AUTH_REQUIRED for reply in replies):
        return True
    return not authenticated and all((reply.enhanced or "").startswith("5.7.") for reply in replies)


def is_too_many_recipients(reply: Reply) -> bool:
    """True for a 552 that means "too many recipients" rather than "message too big"."""
    if reply.code != 552:
        return False
    return reply.enhanced == "5.5.3" or "too many recipients" in reply.text.lower()


def mail_from_concerns_message(reply: Reply) -> bool:
    """True when a 5xx to MAIL FROM is about this message, not about the server.

    Sender-address problems (``5.1.x``) and size limits (552, ``5.3.4``) fail the
    message; anything else (530 authentication required, 550 relay denied, an unknown
    5xx) is a problem of the server or of our configuration and fails no message.
    """
    enhanced = reply.enhanced or ""
    return (
        enhanced.startswith("5.1.")
        or enhanced == "5.3.4"
        or enhanced == "5.6.7"
        or (reply.code == 552 and not enhanced.startswith("5.7."))
    )


def reply_class(code: int) -> str:
    """``2xx``, ``4xx``, ``5xx`` (or ``other``): the label metrics count replies by."""
    return f"{code // 100}xx" if 200 <= code < 600 else "other"
