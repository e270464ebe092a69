"""Turn what the application passes to ``send()`` into exact bytes and a checked envelope.

The only changes ever made to a message: a ``Message-ID`` header is added when it has
none, a ``Date`` header when it has none (both prepended, in the message's own line
ending), and the ``Bcc`` header is removed when the recipients were taken from the
headers. Every other byte is kept exactly as given.
"""

from __future__ import annotations

import email.message
import re
import secrets
import socket
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TypeAlias

from .addresses import addresses_from_headers, envelope_address
from .errors import InvalidMessageError, NoRecipientsError, NoSenderError

#: What ``send(recipients=...)`` accepts: one address, several, or None to read the headers.
Recipients: TypeAlias = "list[str] | tuple[str, ...] | str | None"


@dataclass(frozen=True)
class PreparedMessage:
    """A message ready for the queue: its final bytes and its envelope."""

    message: bytes
    sender: str
    recipients: tuple[str, ...]
    message_id: str


#: One header field: its first line holds a colon after a non-empty name; continuation
#: lines start with a space or tab. The header block ends at a blank line or at the first
#: line that is neither (a body without a blank line before it).
_FIELD = re.compile(rb"([^:\n]+):[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*")


def _header_fields(data: bytes) -> tuple[list[tuple[str, int, int]], int]:
    """Return the header fields of ``data`` as ``(lower-case name, start, end)`` and the
    offset where the header block ends."""
    fields = []
    pos = 0
    match = _FIELD.match(data)
    while match is not None:  # a field is never empty: each match moves on
        end = match.end()
        fields.append((match.group(1).strip().lower().decode("ascii", "replace"), pos, end))
        pos = end
        match = _FIELD.match(data, pos)
    return fields, pos


#: The header fields prepare_message() reads.
_ENVELOPE_FIELDS = frozenset(("sender", "from", "to", "cc", "bcc", "message-id"))


def _field_values(data: bytes, fields: list[tuple[str, int, int]]) -> dict[str, list[str]]:
    """The values of the fields in :data:`_ENVELOPE_FIELDS` by name, as email's compat32
    parser gives them (folds kept), in one pass.

    Bytes that are not UTF-8 become surrogates, which address validation refuses.
    """
    values: dict[str, list[str]] = {}
    for name, start, end in fields:
        if name in _ENVELOPE_FIELDS:
            raw = data[start:end].decode("utf-8", "surrogateescape")
            values.setdefault(name, []).append(raw[raw.index(":") + 1 :].lstrip(" \t").rstrip("\r\n"))
    return values


def message_bytes(message: object) -> bytes:
    """Return the bytes of a message given as bytes, str, Message or ``to_message()`` object."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, str):
        try:
            return message.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidMessageError(f"message text cannot be encoded as UTF-8: {exc}") from None
    if hasattr(message, "to_message") and not isinstance(message, email.message.Message):
        return message_bytes(message.to_message())
    if isinstance(message, email.message.Message):
        try:
            return message.as_bytes()
        except (UnicodeError, LookupError, TypeError, ValueError) as exc:
            raise InvalidMessageError(f"message cannot be serialised: {exc}") from None
    raise TypeError(
        "message must be bytes, str, an email.message.Message/EmailMessage or an object "
        f"with a to_message() method (such as pyramid_mailer's Message), not {type(message).__name__}"
    )


def _object_envelope(message: object) -> tuple[str | None, list[str] | None]:
    """Envelope defaults carried by a pyramid_mailer-style object (``sender``, ``send_to``)."""
    if isinstance(message, (bytes, str, email.message.Message)) or not hasattr(message, "to_message"):
        return None, None
    sender = getattr(message, "sender", None)
    recipients = None
    if hasattr(message, "send_to"):
        ordered: list[str] = []
        for attribute in ("recipients", "cc", "bcc"):
            for address in getattr(message, attribute, None) or ():
                if address not in ordered:
                    ordered.append(address)
        recipients = ordered or list(message.send_to)
    return sender, recipients


_hostname: str | None = None


def _id_domain(sender: str) -> str:
    global _hostname
    domain = sender.rpartition("@")[2]
    if domain.isascii() and not domain.startswith("["):
        return domain
    if _hostname is None:
        _hostname = socket.gethostname() or "localhost"
    return _hostname


def prepare_message(
    message: object,
    sender: str | None = None,
    recipients: list[str] | tuple[str, ...] | str | None = None,
    default_sender: str | None = None,
) -> PreparedMessage:
    """Validate ``message`` and its envelope and return what the queue stores.

    Raises ``TypeError`` for an unsupported message type and a
    :class:`~mq_transaction.errors.InvalidMessageError` subclass (also a ``ValueError``)
    naming the bad value for a missing or malformed sender or recipient.
    """
    object_sender, object_recipients = _object_envelope(message)
    if object_recipients is not None and not object_sender and default_sender:
        # As pyramid_mailer's own Mailer does: its Message refuses to_message() without one.
        message.sender = object_sender = default_sender  # type: ignore[attr-defined]  # has to_message, checked above
    data = message_bytes(message)
    fields, header_end = _header_fields(data)
    values = _field_values(data, fields)

    if sender is None:
        sender = object_sender or default_sender  # an object's own sender wins, as in pyramid_mailer
    if sender is None:
        found = addresses_from_headers(values.get("sender", []), "Sender") or (
            addresses_from_headers(values.get("from", []), "From")
        )
        if not found:
            raise NoSenderError(
                "no envelope sender: pass sender=, set default_sender or give the message a From header"
            )
        sender = found[0]
    else:
        sender = envelope_address(sender, "sender")

    strip_bcc = False
    if recipients is None and object_recipients is not None:
        recipients = object_recipients
    if recipients is None:
        found = []
        for name, header in (("to", "To"), ("cc", "Cc"), ("bcc", "Bcc")):
            for address in addresses_from_headers(values.get(name, []), header):
                if address not in found:
                    found.append(address)
        recipients = found
        strip_bcc = True
    else:
        if isinstance(recipients, str):
            recipients = [recipients]
        unique: list[str] = []
        for value in recipients:
            address = envelope_address(value, "recipient")
            if address not in unique:
                unique.append(address)
        recipients = unique
    if not recipients:
        raise NoRecipientsError("no recipients: pass recipients= or give To, Cc or Bcc headers")

    message_id = ""
    for value in values.get("message-id", []):
        message_id = " ".join(value.split())  # unfolded: the envelope field is one line
        # Stored in the JSON envelope, which must be UTF-8: show bytes that are not as U+FFFD.
        message_id = message_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        break
    names = {name for name, _start, _end in fields}
    has_date = "date" in names

    if strip_bcc and "bcc" in names:
        kept = [data[start:end] for name, start, end in fields if name != "bcc"]
        data = b"".join(kept) + data[header_end:]
    added = []
    if not message_id:
        message_id = f"<{time.time_ns():x}.{secrets.token_hex(8)}@{_id_domain(sender)}>"
        added.append(b"Message-ID: " + message_id.encode("ascii"))
    if not has_date:
        added.append(b"Date: " + formatdate(usegmt=True).encode("ascii"))
    if added:
        first_newline = data.find(b"\n")
        eol = b"\r\n" if first_newline > 0 and data[first_newline - 1 : first_newline] == b"\r" else b"\n"
        data = b"".join(header + eol for header in added) + data
    return PreparedMessage(data, sender, tuple(recipients), message_id)
