"""Validate envelope addresses and extract them from message headers."""

from __future__ import annotations

import re
from email.utils import getaddresses, parseaddr

from .errors import InvalidAddressError

# A pragmatic RFC 5321 mailbox: dot-atom or quoted local part (UTF-8 allowed, RFC 6531),
# "@", then a domain name (UTF-8 labels allowed) or an address literal.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"'
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_MAILBOX = re.compile(rf"^(?:{_DOT_ATOM}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL})$")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The same mailbox without surrogates (nor, as above, control characters), in one match:
# the quick yes of validate_address(); a no goes through the checks that explain why.
_VALID = re.compile(
    rf"(?:{_DOT_ATOM}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL})".replace(
        r"\u0080-\U0010ffff", r"\u0080-\ud7ff\ue000-\U0010ffff"
    )
)
_MAX_LENGTH = 320


def validate_address(address: object, role: str = "address") -> str:
    """Return ``address`` if it is a valid bare envelope address, else raise.

    ``role`` (``sender``, ``recipient``) is used in the error message. The address is
    returned exactly as given: non-ASCII (SMTPUTF8) addresses are kept as they are.
    """
    if isinstance(address, str) and len(address) <= _MAX_LENGTH and _VALID.fullmatch(address):
        return address
    if not isinstance(address, str):
        raise InvalidAddressError(f"{role} {address!r} is not a string")
    if _FORBIDDEN.search(address):
        raise InvalidAddressError(f"{role} {address!r} contains a control character (CR, LF, NUL...)")
    if _SURROGATE.search(address):
        raise InvalidAddressError(f"{role} {address!r} is not valid UTF-8")
    if len(address) > _MAX_LENGTH or not _MAILBOX.match(address):
        raise InvalidAddressError(f"{role} {address!r} is not a valid email address")
    return address


_SPACE_AROUND_SEPARATOR = re.compile(r"\s*([@.])\s*")


def _written_in(address: str, value: str) -> bool:
    """True when ``address`` is written in ``value`` (spaces around "@" and "." aside).

    The email.utils parsers silently rewrite what they cannot parse
    (``bob@exa mple.com`` becomes ``bob@example.com``); such an address is malformed.
    """
    return address in _SPACE_AROUND_SEPARATOR.sub(r"\1", value)


def envelope_address(value: object, role: str) -> str:
    """Return the bare address of ``value`` (``a@b`` or ``Name <a@b>``), validated."""
    if isinstance(value, str) and _FORBIDDEN.search(value):
        raise InvalidAddressError(f"{role} {value!r} contains a control character (CR, LF, NUL...)")
    if isinstance(value, str) and "<" in value:
        _name, bare = parseaddr(value)
        try:
            if not _written_in(bare, value):
                raise InvalidAddressError(value)
            return validate_address(bare, role)
        except InvalidAddressError:
            # Name the value given, not the fragment parseaddr made of it ("Doe, John <j@x>" -> "Doe").
            raise InvalidAddressError(f"{role} {value!r} is not a valid email address") from None
    return validate_address(value, role)


def addresses_from_headers(values: list[str], header: str) -> list[str]:
    """Return the bare addresses in the given header values, each validated.

    An unquoted comma in a display name (``To: Doe, John <john@example.com>``) yields
    a piece with no address; it is rejected instead of becoming a second recipient.
    """
    found = []
    for value in values:
        found.extend(_addresses_from_header(value, header))
    return found


# The common header forms, ``a@b`` and ``Plain Name <a@b>``, comma-separated: parsed
# without email.utils (the slow part of send()), giving exactly what getaddresses gives.
# Anything else (quotes, comments, groups, dots in names, empty items) takes the full parser.
# Measured by bench/hand_written.py (addresses_from_headers, CPU time, best of 9): "a@b"
# 1.9 us against 11.2 us through getaddresses, "Name <a@b>" 1.9 against 14.0 us, three mixed
# addresses 4.4 against 44.8 us, where a whole send() and commit with fsync off takes about 170 us. Checked against
# getaddresses (tests/test_prepare.py) and against the full path (tests/test_hand_written_parts.py).
_LWS = "[ \t\r\n]*"
_PLAIN_ITEM = re.compile(
    rf"{_LWS}(?:[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-\u0080-\U0010ffff \t\r\n]*<({_DOT_ATOM}@{_DOMAIN})>"
    rf"|({_DOT_ATOM}@{_DOMAIN})){_LWS}"
)


_OTHER_SPACE = re.compile(r"[^\S \t\r\n]")  # white space email.utils treats apart (NBSP, U+2028...)


def _plain_addresses(value: str) -> list[str] | None:
    if _OTHER_SPACE.search(value):
        return None
    found = []
    for item in value.split(","):
        match = _PLAIN_ITEM.fullmatch(item)
        if match is None:
            return None
        found.append(match.group(1) or match.group(2))
    return found


def _addresses_from_header(value: str, header: str) -> list[str]:
    plain = _plain_addresses(value)
    if plain is not None:
        return [validate_address(address, f"{header} address") for address in plain]
    found = []
    for name, address in getaddresses([value]):
        if not address:
            if name:
                raise InvalidAddressError(
                    f"{header} header has {name!r} with no address (a comma in an unquoted display name?)"
                )
            continue
        if "@" not in address:
            raise InvalidAddressError(
                f"{header} header has {address!r}, which is not an address (a comma in an unquoted display name?)"
            )
        if not _written_in(address, value):
            raise InvalidAddressError(f"{header} header {value!r} has a malformed address")
        found.append(validate_address(address, f"{header} address"))
    return found
