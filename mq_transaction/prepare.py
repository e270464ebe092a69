"""Turn what the application passes to ``send()`` into exact bytes and a checked envelope.

The only changes ever made to a message: ``Message-ID``, ``Date`` and ``From`` headers
are added when it has none (``From`` only from a configured default sender; prepended, in
the message's own line ending), and the blind-copy headers ``Bcc`` and ``Resent-Bcc`` are
removed (spliced out; no other byte moves). Every other byte is kept exactly as given.
"""

from __future__ import annotations

import email.message
import email.policy
import re
import secrets
import socket
import time
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, getaddresses, parseaddr
from typing import TypeAlias

from .addresses import address_key, addresses_from_headers, envelope_address
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


#: Headers whose values are addresses: a message object with a non-ASCII address in one
#: of them is serialised with ``utf8=True`` (see :func:`_serialise`).
_ADDRESS_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-bcc",
)


def _has_non_ascii_address(message: email.message.Message) -> bool:
    for name in _ADDRESS_HEADERS:
        for value in message.get_all(name, ()):
            addresses = getattr(value, "addresses", None)  # an EmailPolicy header object
            if addresses is not None:
                if any(not address.addr_spec.isascii() for address in addresses):
                    return True
            elif isinstance(value, str) and not value.isascii():
                if any(not address.isascii() for _name, address in getaddresses([value])):
                    return True
    return False


def _serialise(message: email.message.Message) -> bytes:
    """``message.as_bytes()``; with ``utf8=True`` when an address is not ASCII.

    Without it, email's generator writes a non-ASCII address as an RFC 2047 encoded word
    (``=?utf-8?q?jos=C3=A9?=@example.org``), which is no address at all: RFC 2047 forbids
    encoded words there. With it, the headers carry the address in UTF-8 (RFC 6532), as
    the SMTPUTF8 transaction that delivers it expects.
    """
    policy = message.policy
    if _has_non_ascii_address(message):
        if isinstance(policy, email.policy.EmailPolicy):
            policy = policy.clone(utf8=True)
        else:  # compat32 (email.mime, pyramid_mailer): same line ending, UTF-8 headers
            policy = email.policy.SMTPUTF8.clone(linesep=policy.linesep)
    return message.as_bytes(policy=policy)


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
            return _serialise(message)
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
        ordered = [
            address for attribute in ("recipients", "cc", "bcc") for address in getattr(message, attribute, None) or ()
        ]
        recipients = ordered or list(message.send_to)  # duplicates are dropped with the others
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


def _check_header_section(data: bytes, fields: list[tuple[str, int, int]], header_end: int) -> None:
    """Refuse a message whose header section would be malformed on the wire."""
    if not fields:
        first_line = data.split(b"\n", 1)[0][:80]
        raise InvalidMessageError(
            f"the message has no header section (it starts with {first_line!r}): a message starts with "
            "header fields such as From:, To: and Subject:, then a blank line, then the body"
        )
    rest = data[header_end : header_end + 2]
    if rest and not rest.startswith((b"\n", b"\r\n")):
        line = data[header_end:].split(b"\n", 1)[0][:80]
        raise InvalidMessageError(
            f"header line {line!r} is not a header field (Name: value): put a blank line between "
            "the headers and the body"
        )
    header = data[:header_end]
    if header.count(b"\r") != header.count(b"\r\n"):
        for _name, start, end in fields:
            field = data[start:end]
            if field.count(b"\r") != field.count(b"\r\n"):
                raise InvalidMessageError(
                    f"header field {field[:200]!r} holds a CR that is not followed by LF: it would become a "
                    "line break on the wire and start a new header line; end lines with CRLF or LF only"
                )


def _add_headers(data: bytes, added: list[bytes]) -> bytes:
    """``data`` with the ``added`` header lines prepended, in the line ending of its first line."""
    first_newline = data.find(b"\n")
    eol = b"\r\n" if first_newline > 0 and data[first_newline - 1 : first_newline] == b"\r" else b"\n"
    return b"".join(header + eol for header in added) + data


def _from_header(default_sender: str) -> str:
    """The ``From`` value for a configured default sender: its display name kept (encoded
    when it is not ASCII), its address as written."""
    address = envelope_address(default_sender, "default sender")
    name, _parsed = parseaddr(default_sender)
    if not name:
        return address
    if address.isascii():
        return formataddr((name, address))
    return f"{Header(name, 'utf-8').encode()} <{address}>"


#: The blind-copy headers: removed from every message (see prepare_message).
_BLIND_COPY = frozenset(("bcc", "resent-bcc"))


def _unique(addresses: list[str]) -> list[str]:
    """``addresses`` without duplicates (the first keeps its place); domains compare without case."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address_key(address), address)
    return list(seen.values())


def prepare_message(
    message: object,
    sender: str | None = None,
    recipients: list[str] | tuple[str, ...] | str | None = None,
    default_sender: str | None = None,
) -> PreparedMessage:
    """Validate ``message`` and its envelope and return what the queue stores.

    Raises ``TypeError`` for an unsupported message type and a
    :class:`~mq_transaction.errors.InvalidMessageError` subclass (also a ``ValueError``)
    naming the bad value for a missing or malformed sender or recipient, a malformed
    header section, or a missing ``From`` header with no default sender to add.

    ``Bcc`` and ``Resent-Bcc`` are removed whatever names the recipients: whoever else
    receives the message must not read who got a blind copy, and the recipients given to
    ``recipients=`` may well include those in ``Bcc``. The fields are cut out of the bytes;
    nothing else is re-encoded.
    """
    object_sender, object_recipients = _object_envelope(message)
    if object_recipients is not None and not object_sender and default_sender:
        # As pyramid_mailer's own Mailer does: its Message refuses to_message() without one.
        message.sender = object_sender = default_sender  # type: ignore[attr-defined]  # has to_message, checked above
    data = message_bytes(message)
    fields, header_end = _header_fields(data)
    _check_header_section(data, fields, header_end)
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

    if recipients is None and object_recipients is not None:
        recipients = object_recipients
    if recipients is None:
        recipients = _unique(
            [
                address
                for name, header in (("to", "To"), ("cc", "Cc"), ("bcc", "Bcc"))
                for address in addresses_from_headers(values.get(name, []), header)
            ]
        )
    else:
        if isinstance(recipients, str):
            recipients = [recipients]
        recipients = _unique([envelope_address(value, "recipient") for value in recipients])
    if not recipients:
        raise NoRecipientsError("no recipients: pass recipients= or give To, Cc or Bcc headers")
    names = {name for name, _start, _end in fields}
    from_header = None
    if "from" not in names:
        if not default_sender:
            raise InvalidMessageError(
                "the message has no From header: add one, or configure a default sender "
                "(QueuedMailer(default_sender=...), mq.default_sender), which send() then adds as From"
            )
        from_header = _from_header(default_sender)

    message_id = ""
    for value in values.get("message-id", []):
        message_id = " ".join(value.split())  # unfolded: the envelope field is one line
        # Stored in the JSON envelope, which must be UTF-8: show bytes that are not as U+FFFD.
        message_id = message_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        break

    if names & _BLIND_COPY:
        kept = [data[start:end] for name, start, end in fields if name not in _BLIND_COPY]
        data = b"".join(kept) + data[header_end:]
    added = []
    if not message_id:
        message_id = f"<{time.time_ns():x}.{secrets.token_hex(8)}@{_id_domain(sender)}>"
        added.append(b"Message-ID: " + message_id.encode("ascii"))
    if "date" not in names:
        added.append(b"Date: " + formatdate(usegmt=True).encode("ascii"))
    if from_header is not None:
        added.append(b"From: " + from_header.encode("utf-8"))
    if added:
        data = _add_headers(data, added)
    return PreparedMessage(data, sender, tuple(recipients), message_id)
