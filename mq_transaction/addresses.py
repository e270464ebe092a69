"""Validate envelope addresses and extract them from message headers."""

from __future__ import annotations

import functools
import re
import unicodedata
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
_MAILBOX = rf"^(?:{_DOT_ATOM}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL})$"
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The same mailbox without surrogates (nor, as above, control characters), in one match:
# the quick yes of validate_address(); a no goes through the checks that explain why.
_VALID = rf"(?:{_DOT_ATOM}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL})".replace(
    r"\u0080-\U0010ffff", r"\u0080-\ud7ff\ue000-\U0010ffff"
)
_MAX_LENGTH = 320


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """The three address patterns above, compiled on first use: their classes span all of
    Unicode and are slow to compile (``python -X importtime``: this module's import went
    from 159 ms to 4 ms, on a loaded machine), which every ``mq-queue`` and ``mq-send``
    start would otherwise pay although neither validates an address."""
    return re.compile(pattern)


#: An RFC 2047 encoded word (``=?utf-8?q?jos=C3=A9?=``): fine in a display name, never
#: part of an address (RFC 2047 section 5), where it would become a nonexistent mailbox.
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[BbQq]\?[^?\s]*\?=")

#: Unicode categories refused anywhere in an address: controls (C1 ones such as U+0085
#: included), format characters (bidi controls such as U+202E, zero-width spaces, BOM),
#: line and paragraph separators (U+2028, U+2029) and spaces other than ASCII's. None of
#: them is visible, and the line breaks among them end a line in some readers.
_HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Zs"))
#: Format characters that some scripts need inside a word (IDNA allows them in context).
_JOINERS = frozenset("\u200c\u200d")


def _hidden_character(address: str) -> str | None:
    """The first non-ASCII character of ``address`` that is invisible or breaks a line, if any."""
    for character in address:
        if character >= "\x80" and character not in _JOINERS and unicodedata.category(character) in _HIDDEN_CATEGORIES:
            return character
    return None


def _quick_yes(address: str) -> bool:
    """True when ``address`` is valid, decided in one match for the common case; the same
    verdict as :func:`_explained_problem` (an agreement test checks it)."""
    return (
        len(address) <= _MAX_LENGTH
        and _compiled(_VALID).fullmatch(address) is not None
        and (address.isascii() or _hidden_character(address) is None)
        and ("=?" not in address or not _ENCODED_WORD.search(address))
    )


def _address_problem(address: object) -> str | None:
    """Why ``address`` is not a valid bare envelope address, or None when it is."""
    if isinstance(address, str) and _quick_yes(address):
        return None
    return _explained_problem(address)


def _explained_problem(address: object) -> str | None:
    """Why ``address`` is not a valid bare envelope address, one check at a time, or None."""
    if not isinstance(address, str):
        return "is not a string"
    if _FORBIDDEN.search(address):
        return "contains a control character (CR, LF, NUL...)"
    if _SURROGATE.search(address):
        return "is not valid UTF-8"
    hidden = _hidden_character(address)
    if hidden is not None:
        name = unicodedata.name(hidden, "a control character")
        return (
            f"contains U+{ord(hidden):04X} ({name}), an invisible or line-breaking character "
            "that has no place in an address"
        )
    encoded = _ENCODED_WORD.search(address)
    if encoded is not None:
        return (
            f"contains the RFC 2047 encoded word {encoded.group(0)!r}, which is not allowed in an address: "
            "write the address in UTF-8 as it is (an email.message.EmailMessage can be passed to send() "
            "as it is, or serialised with policy=email.policy.SMTPUTF8)"
        )
    if len(address) > _MAX_LENGTH or not _compiled(_MAILBOX).match(address):
        return "is not a valid email address"
    return None


def validate_address(address: object, role: str = "address") -> str:
    """Return ``address`` if it is a valid bare envelope address, else raise.

    ``role`` (``sender``, ``recipient``) is used in the error message. The address is
    returned exactly as given: non-ASCII (SMTPUTF8) addresses are kept as they are.
    """
    problem = _address_problem(address)
    if problem is not None:
        raise InvalidAddressError(f"{role} {address!r} {problem}")
    return address  # type: ignore[return-value]  # a str: _address_problem checked it


def address_key(address: str) -> str:
    """The form of a valid address under which duplicates are one recipient.

    The domain is case-insensitive (RFC 5321 section 2.4), the local part is not: only the
    domain is lower-cased.
    """
    local, _at, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def ascii_address(address: str) -> str:
    """``address`` as a server without SMTPUTF8 can take it: the domain in IDNA A-label form.

    Raises :class:`InvalidAddressError`, saying why, when the local part is not ASCII (such
    an address has no ASCII form) or the domain has no A-label form.
    """
    if address.isascii():
        return address
    local, _at, domain = address.rpartition("@")
    if not local.isascii():
        raise InvalidAddressError(f"{address!r} has a non-ASCII local part, which has no ASCII form")
    import idna  # only for this rare case

    try:
        a_label = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidAddressError(f"{address!r} has a domain with no IDNA A-label form ({exc})") from None
    return f"{local}@{a_label}"


_SPACE_AROUND_SEPARATOR = re.compile(r"\s*([@.])\s*")


def _without_space_around_separators(value: str) -> str:
    """``value`` with the spaces around "@" and "." removed, as the email.utils parsers read it.

    They silently rewrite what they cannot parse (``bob@exa mple.com`` becomes
    ``bob@example.com``): an address that is not in this form of its header value was
    never written there, so it is malformed.
    """
    return _SPACE_AROUND_SEPARATOR.sub(r"\1", value)


def envelope_address(value: object, role: str) -> str:
    """Return the bare address of ``value`` (``a@b`` or ``Name <a@b>``), validated."""
    if isinstance(value, str) and _FORBIDDEN.search(value):
        raise InvalidAddressError(f"{role} {value!r} contains a control character (CR, LF, NUL...)")
    if isinstance(value, str) and "<" in value:
        _name, bare = parseaddr(value)
        if bare in _without_space_around_separators(value):
            problem = _address_problem(bare)
        else:  # parseaddr dropped something: say what is wrong with what was written after "<"
            written = value[value.rfind("<") + 1 :].rstrip().removesuffix(">")
            problem = _address_problem(written) or "is not a valid email address"
        if problem is not None:
            # Name the value given, not the fragment parseaddr made of it ("Doe, John <j@x>" -> "Doe").
            raise InvalidAddressError(f"{role} {value!r} {problem}")
        return bare
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


# The common header forms, ``a@b``, ``Plain Name <a@b>`` and ``"Quoted Name" <a@b>``,
# comma-separated: parsed without email.utils (the slow part of send()), giving exactly what
# getaddresses gives. Anything else (escapes or commas in quotes, comments, groups, dots in
# unquoted names, empty items) takes the full parser.
# Measured by bench/hand_written.py (addresses_from_headers, CPU time, best of 9): "a@b"
# 1.9 us against 11.2 us through getaddresses, "Name <a@b>" 1.9 against 14.0 us, three mixed
# addresses 4.4 against 44.8 us, where a whole send() and commit with fsync off takes about
# 170 us; by bench/recipients.py: 50,000 '"Name" <a@b>' in one To header 0.19 s against 3 s.
# Checked against getaddresses (tests/test_prepare.py) and against the full path
# (tests/test_hand_written_parts.py).
_LWS = "[ \t\r\n]*"
_PLAIN_ITEM = (
    rf"{_LWS}(?:(?:[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-\u0080-\U0010ffff \t\r\n]*"
    rf'|"[^"\\\r\n]*"{_LWS})<({_DOT_ATOM}@{_DOMAIN})>'
    rf"|({_DOT_ATOM}@{_DOMAIN})){_LWS}"
)


_OTHER_SPACE = re.compile(r"[^\S \t\r\n]")  # white space email.utils treats apart (NBSP, U+2028...)


def _plain_addresses(value: str) -> list[str] | None:
    if _OTHER_SPACE.search(value):
        return None
    found = []
    for item in value.split(","):
        match = _compiled(_PLAIN_ITEM).fullmatch(item)
        if match is None:
            return None
        found.append(match.group(1) or match.group(2))
    return found


def _written_item(value: str, fragment: str, cursor: int) -> tuple[str, int]:
    """The comma-separated item of the header ``value`` that holds ``fragment`` (the first
    one at or after ``cursor``), as written, and the offset where that item ends.

    Used to quote what the user wrote in an error, not what the parser made of it
    (``eve@@example.org`` parses as ``@example.org``). A quoted display name may hold
    commas: the item grows to the next comma until its quotes pair up.
    """
    position = value.find(fragment, cursor) if fragment else -1
    if position < 0:
        return value.strip(), cursor
    start = value.rfind(",", cursor, position) + 1 or cursor
    end = value.find(",", position + len(fragment))
    end = len(value) if end < 0 else end
    while value.count('"', start, end) % 2 and start > cursor:
        start = value.rfind(",", cursor, start - 1) + 1 or cursor
    while value.count('"', start, end) % 2 and end < len(value):
        end = value.find(",", end + 1)
        end = len(value) if end < 0 else end
    return value[start:end].strip(), end


def _addresses_from_header(value: str, header: str) -> list[str]:
    plain = _plain_addresses(value)
    if plain is not None:
        return [validate_address(address, f"{header} address") for address in plain]
    found = []
    as_parsed = _without_space_around_separators(value)
    cursor = parsed_cursor = 0
    for name, address in getaddresses([value]):
        written, cursor = _written_item(value, address or name, cursor)
        if not address:
            if name:
                raise InvalidAddressError(
                    f"{header} header has {written!r} with no address (a comma in an unquoted display name?)"
                )
            continue
        if "@" not in address and not _ENCODED_WORD.search(address):
            raise InvalidAddressError(
                f"{header} header has {written!r}, which is not an address (a comma in an unquoted display name?)"
            )
        # Searched from the previous address on: the addresses come in the order they are written.
        position = as_parsed.find(address, parsed_cursor)
        if position < 0:
            raise InvalidAddressError(f"{header} address {written!r} is malformed")
        parsed_cursor = position + len(address)
        problem = _address_problem(address)
        if problem is not None:
            raise InvalidAddressError(f"{header} address {written!r} {problem}")
        found.append(address)
    return found
