"""What one SMTP transaction puts on the wire: the message's bytes and the envelope's addresses.

The queued bytes are never changed: :func:`wire_format` (for ``DATA``) and :func:`crlf_lines`
(for ``BDAT``) make the copy that is sent. :func:`needs_smtputf8` tells whether an envelope
needs the server's SMTPUTF8 (RFC 6531), and :func:`ascii_envelope` converts one for a
server without it (IDNA A-labels for domains; a local part has no ASCII form).
"""

from __future__ import annotations

import re

from .addresses import ascii_address
from .errors import InvalidAddressError
from .replies import Reply

_EOL = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def wire_format(message: bytes) -> bytes:
    """The message as it goes on the wire: CRLF line endings, dot-stuffed, ending in CRLF.

    The queued bytes are never changed; this copy is made for the DATA phase only.
    """
    if (
        message.endswith(b"\r\n")
        and not message.startswith(b".")
        and b"\n." not in message
        and message.count(b"\r") == message.count(b"\n") == message.count(b"\r\n")
    ):
        # Every CR and every LF is part of a CRLF and no line starts with a dot: the bytes
        # are already on-the-wire form (the common case; the two regex passes cost more).
        return message
    wire = _EOL.sub(b"\r\n", message)
    wire = _LEADING_DOT.sub(b"..", wire)
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return wire


def crlf_lines(message: bytes) -> bytes:
    """The message with CRLF line endings and a final CRLF, not dot-stuffed: the ``BDAT`` form."""
    if message.endswith(b"\r\n") and message.count(b"\r") == message.count(b"\n") == message.count(b"\r\n"):
        return message
    wire = _EOL.sub(b"\r\n", message)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"


def needs_smtputf8(sender: str, recipients: list[str]) -> bool:
    """True when an envelope address is not ASCII (RFC 6531)."""
    return not sender.isascii() or not all(r.isascii() for r in recipients)


def ascii_envelope(
    sender: str, recipients: list[str], replies: dict[str, Reply], wire_address: dict[str, str]
) -> list[str]:
    """Prepare a non-ASCII envelope for a server without SMTPUTF8; return who can still be tried.

    A non-ASCII domain goes out in its IDNA A-label form (recorded in ``wire_address``). A
    non-ASCII local part has no ASCII form: that recipient fails permanently (a 553 5.6.7
    reply in ``replies`` that says why), and every recipient does when it is the sender's.
    """
    needs = "the server does not offer SMTPUTF8, which this address needs"
    try:
        wire_address[sender] = ascii_address(sender)
    except InvalidAddressError as exc:
        reply = Reply(553, f"5.6.7 envelope sender {exc}; {needs}")
        for address in recipients:
            replies[address] = reply
        return []
    remaining = []
    for address in recipients:
        try:
            wire_address[address] = ascii_address(address)
        except InvalidAddressError as exc:
            replies[address] = Reply(553, f"5.6.7 {exc}; {needs}")
        else:
            remaining.append(address)
    return remaining
