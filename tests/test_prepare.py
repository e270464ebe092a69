"""What ``send()`` stores: the caller's exact bytes and a validated envelope.

The only changes ever made to a message: ``Message-ID`` and ``Date`` headers are
prepended when missing, and a ``Bcc`` header is removed when the recipients were taken
from the headers.
"""

from __future__ import annotations

import os
import random
import re
from email.message import EmailMessage
from email.mime.text import MIMEText

import pytest
import transaction
from pyramid_mailer.message import Message as PyramidMessage

from mq_transaction import (
    InvalidAddressError,
    InvalidMessageError,
    MailQueueError,
    NoRecipientsError,
    NoSenderError,
)
from mq_transaction.prepare import prepare_message
from mq_transaction.queuefile import decode

HEADERS = (
    b"From: App <app@example.com>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: fidelity\r\n"
    b"Message-ID: <fidelity@example.com>\r\n"
    b"Date: Sat, 28 Nov 2026 15:11:36 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
)

#: The headers prepare_message prepends when missing, in the message's own line ending.
ADDED = re.compile(rb"\A(Message-ID: <[^>\r\n]+>(\r?\n))?(Date: [^\r\n]+\2)?")


def store(mailer, message, **envelope) -> tuple[object, bytes]:
    """Send ``message`` in a committed transaction; return the stored envelope and bytes."""
    with transaction.manager:
        queue_id = mailer.send(message, **envelope)
    with open(os.path.join(mailer.queue.path, "new", queue_id), "rb") as handle:
        return decode(handle.read())


def without_added_headers(stored: bytes) -> tuple[bytes, bytes]:
    """Split ``stored`` into the documented prepended headers and the rest."""
    added = ADDED.match(stored).group(0)
    return added, stored[len(added) :]


# -- byte fidelity ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_random_8bit_body_is_stored_byte_for_byte(queued_mailer, seed):
    rng = random.Random(seed)
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 50_000)))
    message = HEADERS + body
    _envelope, stored = store(queued_mailer, message)
    assert stored == message


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["CRLF", "bare-LF"])
def test_line_endings_are_kept_and_added_headers_use_the_message_own(queued_mailer, eol):
    message = eol.join([b"To: bob@example.com", b"Subject: eol", b"", b"line one", b"line two", b""])
    envelope, stored = store(queued_mailer, message)
    added, rest = without_added_headers(stored)
    assert rest == message
    assert added.startswith(b"Message-ID: <") and b"\nDate: " in added
    assert added.count(eol) == 2
    if eol == b"\n":
        assert b"\r" not in added
    assert envelope.message_id.encode() in added


def test_mixed_line_endings_are_stored_as_given(queued_mailer):
    message = HEADERS + b"crlf\r\nbare lf\nbare cr\rend"
    assert store(queued_mailer, message)[1] == message


def test_long_lines_are_not_folded_or_wrapped(queued_mailer):
    long_header = b"X-Long: " + b"h" * 5000 + b"\r\n"
    message = long_header + HEADERS + b"b" * 200_000 + b"\r\n" + b"c" * 1001
    assert store(queued_mailer, message)[1] == message


def test_a_20_mb_message_is_stored_byte_for_byte(queued_mailer):
    rng = random.Random(20)
    body = rng.randbytes(20 * 1024 * 1024)
    message = HEADERS + body
    _envelope, stored = store(queued_mailer, message)
    assert len(stored) == len(message)
    assert stored == message


def test_message_id_and_date_are_added_only_when_missing(queued_mailer):
    bare = b"To: bob@example.com\r\nSubject: none\r\n\r\nbody\r\n"
    envelope, stored = store(queued_mailer, bare)
    added, rest = without_added_headers(stored)
    assert rest == bare
    assert added.startswith(b"Message-ID: <") and b"\r\nDate: " in added
    assert re.fullmatch(r"<[^<>@\s]+@example\.com>", envelope.message_id)

    with_date = b"Date: Sat, 28 Nov 2026 15:11:36 +0000\r\n" + bare
    envelope, stored = store(queued_mailer, with_date)
    assert stored == b"Message-ID: " + envelope.message_id.encode() + b"\r\n" + with_date

    with_id = b"Message-ID: <mine@example.com>\r\n" + bare
    envelope, stored = store(queued_mailer, with_id)
    date_line, rest = stored.split(b"\r\n", 1)
    assert date_line.startswith(b"Date: ") and rest == with_id
    assert envelope.message_id == "<mine@example.com>"


def test_a_folded_message_id_is_recorded_on_one_line(queued_mailer):
    message = b"Message-ID:\r\n <folded@example.com>\r\n" + HEADERS.split(b"\r\n", 4)[4]
    envelope, stored = store(queued_mailer, message, recipients=["bob@example.com"])
    assert envelope.message_id == "<folded@example.com>"
    assert stored == message


def test_str_message_is_stored_as_utf8(queued_mailer):
    text = "To: bob@example.com\nSubject: caf\u00e9\nMessage-ID: <s@x>\nDate: x\n\nna\u00efve \u2603\n"
    assert store(queued_mailer, text)[1] == text.encode("utf-8")


def test_email_message_objects_are_stored_as_their_as_bytes(queued_mailer):
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "bob@example.com"
    message["Message-ID"] = "<obj@example.com>"
    message["Date"] = "Sat, 28 Nov 2026 15:11:36 +0000"
    message.set_content("h\u00e9llo\n")
    assert store(queued_mailer, message)[1] == message.as_bytes()

    legacy = MIMEText("plain")
    legacy["To"] = "bob@example.com"
    assert without_added_headers(store(queued_mailer, legacy)[1])[1] == legacy.as_bytes()


@pytest.mark.parametrize("bad", [42, None, ["To: a@b"], {"to": "a@b"}, 3.5, object()])
def test_unsupported_message_types_raise_type_error(queued_mailer, bad, queue_files):
    transaction.begin()
    with pytest.raises(TypeError, match="to_message"):
        queued_mailer.send(bad, recipients=["bob@example.com"])
    assert queue_files("tmp") == []


def test_a_str_message_that_is_not_encodable_is_an_invalid_message():
    with pytest.raises(InvalidMessageError):
        prepare_message("To: bob@example.com\n\n\ud800", sender="app@example.com")


# -- the envelope ------------------------------------------------------------------------


def test_five_hundred_recipients_are_stored_in_order(queued_mailer):
    recipients = [f"user{n}@example.com" for n in range(500)]
    envelope, _stored = store(queued_mailer, HEADERS, recipients=recipients)
    assert [r.address for r in envelope.recipients] == recipients
    assert all(r.status == "pending" for r in envelope.recipients)


@pytest.mark.slow
def test_five_hundred_recipients_in_headers_are_all_found(queued_mailer):
    recipients = [f"user{n}@example.com" for n in range(500)]
    message = b"To: " + b",\r\n ".join(f'"User {n}" <{a}>'.encode() for n, a in enumerate(recipients))
    message += b"\r\nSubject: many\r\n\r\nbody\r\n"
    envelope, stored = store(queued_mailer, message)
    assert [r.address for r in envelope.recipients] == recipients
    assert without_added_headers(stored)[1] == message


def test_commas_and_quotes_in_quoted_display_names_do_not_split_recipients():
    message = (
        b'To: "Doe, John" <john@example.com>, "O\\"Brien, Pat" <pat@example.com>\r\n'
        b"Cc: \"Smith, 'Al'\" <al@example.com>\r\n\r\nbody\r\n"
    )
    prepared = prepare_message(message, sender="app@example.com")
    assert prepared.recipients == ("john@example.com", "pat@example.com", "al@example.com")


def test_a_quoted_display_name_with_a_comma_is_accepted_as_a_recipient_argument():
    prepared = prepare_message(HEADERS, recipients=['"Doe, John" <john@example.com>'])
    assert prepared.recipients == ("john@example.com",)


def test_an_unquoted_comma_in_a_display_name_header_is_rejected_naming_it():
    message = b"To: Doe, John <john@example.com>\r\n\r\nbody\r\n"
    with pytest.raises(InvalidAddressError, match="Doe"):
        prepare_message(message, sender="app@example.com")


def test_an_unquoted_comma_in_a_display_name_argument_is_rejected_naming_it():
    with pytest.raises(InvalidAddressError) as caught:
        prepare_message(HEADERS, recipients=["Doe, John <john@example.com>"])
    assert "'Doe, John <john@example.com>'" in str(caught.value)


INJECTIONS = [
    "bob@example.com\r\nRCPT TO:<evil@example.com>",
    "bob@example.com\nevil@example.com",
    "bob@example.com\revil",
    "bob\x00@example.com",
    "Bob <bob@example.com>\r\nBcc: evil@example.com",
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("role", ["sender", "recipients"])
def test_control_characters_in_an_address_are_rejected_naming_the_value(queued_mailer, queue_files, value, role):
    transaction.begin()
    with pytest.raises(InvalidAddressError) as caught:
        queued_mailer.send(HEADERS, **{role: value if role == "sender" else [value]})
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, MailQueueError)
    assert repr(value) in str(error)
    transaction.commit()
    assert queue_files("tmp") == [] and queue_files("new") == []


def test_control_characters_in_a_default_sender_are_rejected(mail_queue):
    from mq_transaction import QueuedMailer

    mailer = QueuedMailer(mail_queue, default_sender="app@example.com\r\nX: y")
    with pytest.raises(InvalidAddressError, match="control character"):
        mailer.prepare(HEADERS)


@pytest.mark.parametrize(
    "header",
    [
        b"To: bob\x00@example.com",
        b"To: bob@exa mple.com",
        b"To: bob@example.com junk",
        b"To: <>",
        b"To: bob@",
        b"From: x\r\nTo: @example.com",
    ],
)
def test_malformed_header_addresses_are_rejected(header):
    with pytest.raises(InvalidMessageError):
        prepare_message(header + b"\r\n\r\nbody", sender="app@example.com")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "bob",
        "bob@",
        "@example.com",
        "bob@@example.com",
        "bob@exa mple.com",
        "Bob <bob@exa mple.com>",
        "a" * 320 + "@x.com",
        42,
        None,
    ],
)
def test_malformed_recipient_arguments_are_rejected(bad):
    with pytest.raises(InvalidAddressError):
        prepare_message(HEADERS, recipients=[bad])


SMTPUTF8 = [
    "j\u00f6rg@b\u00fccher.example",
    "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a",
    "\u0438\u0432\u0430\u043d@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
]


def test_non_ascii_addresses_are_stored_exactly(queued_mailer):
    envelope, _stored = store(queued_mailer, HEADERS, sender=SMTPUTF8[0], recipients=SMTPUTF8)
    assert envelope.sender == SMTPUTF8[0]
    assert [r.address for r in envelope.recipients] == SMTPUTF8


def test_non_ascii_addresses_in_utf8_headers_are_found_exactly(queued_mailer):
    message = ("From: J\u00f6rg <" + SMTPUTF8[0] + ">\r\nTo: " + ", ".join(SMTPUTF8[1:]) + "\r\n\r\nbody\r\n").encode()
    envelope, stored = store(queued_mailer, message, sender=None)
    assert [r.address for r in envelope.recipients] == SMTPUTF8[1:]
    assert without_added_headers(stored)[1] == message


def test_non_ascii_sender_domain_does_not_end_up_in_the_message_id():
    prepared = prepare_message(b"To: bob@example.com\r\n\r\nx", sender=SMTPUTF8[0])
    assert prepared.message_id.isascii()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b'"john doe"@example.com', '"john doe"@example.com'),
        (b"Bob Smith <bob@example.com>", "bob@example.com"),
        (b"bob@example.com (Bob Smith)", "bob@example.com"),
        (b"<bob@example.com>", "bob@example.com"),
        (b"Bob\r\n <bob@example.com>", "bob@example.com"),
    ],
)
def test_well_formed_header_addresses_are_taken_as_written(header, expected):
    prepared = prepare_message(b"To: " + header + b"\r\n\r\nbody", sender="app@example.com")
    assert prepared.recipients == (expected,)


def test_duplicate_recipients_are_stored_once():
    prepared = prepare_message(
        b"To: bob@example.com, Bob <bob@example.com>\r\nCc: bob@example.com, al@example.com\r\n\r\nx",
        sender="app@example.com",
    )
    assert prepared.recipients == ("bob@example.com", "al@example.com")


def test_a_single_string_recipient_is_one_recipient():
    assert prepare_message(HEADERS, recipients="carol@example.com").recipients == ("carol@example.com",)


def test_no_recipients_anywhere_is_rejected():
    with pytest.raises(NoRecipientsError):
        prepare_message(b"Subject: nobody\r\n\r\nx", sender="app@example.com")
    with pytest.raises(NoRecipientsError):
        prepare_message(HEADERS, recipients=[])


def test_no_sender_anywhere_is_rejected():
    with pytest.raises(NoSenderError) as caught:
        prepare_message(b"To: bob@example.com\r\n\r\nx")
    assert isinstance(caught.value, ValueError)


def test_sender_defaults_to_default_sender_then_the_sender_header_then_from():
    message = b"From: from@example.com\r\nSender: sender@example.com\r\nTo: bob@example.com\r\n\r\nx"
    assert prepare_message(message, default_sender="default@example.com").sender == "default@example.com"
    assert prepare_message(message).sender == "sender@example.com"
    assert prepare_message(message.replace(b"Sender: sender@example.com\r\n", b"")).sender == "from@example.com"
    assert prepare_message(message, sender="Bounce <b@example.com>").sender == "b@example.com"


def test_the_envelope_never_comes_from_headers_other_tools_use():
    message = (
        b"X-Actually-From: evil@example.com\r\nX-Actually-To: evil@example.com\r\n"
        b"X-Zope-From: evil@example.com\r\nX-Zope-To: evil@example.com\r\n"
        b"From: app@example.com\r\nTo: bob@example.com\r\n\r\nx"
    )
    prepared = prepare_message(message)
    assert (prepared.sender, prepared.recipients) == ("app@example.com", ("bob@example.com",))
    assert prepared.message.endswith(message)


# -- Bcc ------------------------------------------------------------------------------


BCC_MESSAGE = (
    b"From: app@example.com\r\n"
    b"To: bob@example.com\r\n"
    b"Bcc: secret@example.com,\r\n"
    b"\tsecret2@example.com\r\n"
    b"Subject: bcc\r\n"
    b"Message-ID: <bcc@example.com>\r\n"
    b"Date: Sat, 28 Nov 2026 15:11:36 +0000\r\n"
    b"\r\n"
    b"Bcc: this line is body, not a header\r\n"
)


def test_bcc_header_is_stripped_when_recipients_come_from_headers(queued_mailer):
    envelope, stored = store(queued_mailer, BCC_MESSAGE)
    assert [r.address for r in envelope.recipients] == [
        "bob@example.com",
        "secret@example.com",
        "secret2@example.com",
    ]
    assert b"secret" not in stored
    assert stored == BCC_MESSAGE.replace(b"Bcc: secret@example.com,\r\n\tsecret2@example.com\r\n", b"")


def test_bcc_header_is_kept_when_recipients_are_given(queued_mailer):
    envelope, stored = store(queued_mailer, BCC_MESSAGE, recipients=["bob@example.com"])
    assert [r.address for r in envelope.recipients] == ["bob@example.com"]
    assert stored == BCC_MESSAGE


# -- pyramid_mailer's Message, unchanged ----------------------------------------------


def pyramid_message(**overrides) -> PyramidMessage:
    fields = {
        "subject": "Welcome",
        "sender": "Alice <alice@example.com>",
        "recipients": ["bob@example.com", "carol@example.com"],
        "cc": ["dave@example.com"],
        "bcc": ["erin@example.com"],
        "body": "Hello, welcome.",
    }
    fields.update(overrides)
    return PyramidMessage(**fields)


def test_pyramid_mailer_message_is_accepted_with_its_own_envelope(queued_mailer):
    envelope, stored = store(queued_mailer, pyramid_message())
    assert envelope.sender == "alice@example.com"  # its own sender, before default_sender
    assert [r.address for r in envelope.recipients] == [
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
        "erin@example.com",
    ]
    assert b"erin@example.com" not in stored
    assert b"From: Alice <alice@example.com>" in stored
    assert b"Cc: dave@example.com" in stored


def test_pyramid_mailer_message_without_a_sender_gets_the_default_sender(queued_mailer):
    message = pyramid_message(sender=None)
    envelope, stored = store(queued_mailer, message)
    assert envelope.sender == "app@example.com"
    assert b"From: app@example.com" in stored


def test_recipients_argument_overrides_a_pyramid_mailer_message_envelope(queued_mailer):
    envelope, _stored = store(queued_mailer, pyramid_message(), recipients=["zed@example.com"])
    assert [r.address for r in envelope.recipients] == ["zed@example.com"]


def test_pyramid_mailer_message_with_a_bad_recipient_is_rejected_naming_it():
    with pytest.raises(InvalidAddressError, match="not-an-address"):
        prepare_message(pyramid_message(bcc=["not-an-address"]))


# -- header bytes that are not UTF-8 ----------------------------------------------------


def test_an_address_header_with_bytes_that_are_not_utf8_is_rejected():
    with pytest.raises(InvalidAddressError, match="UTF-8"):
        prepare_message(b"From: app@example.com\r\nTo: b\xffob@example.com\r\n\r\nx")


def test_a_message_id_with_bytes_that_are_not_utf8_is_queued_unchanged(queued_mailer):
    message = b"From: app@example.com\r\nTo: bob@example.com\r\nMessage-ID: <\xff\xfe@example.com>\r\n\r\nx"
    envelope, stored = store(queued_mailer, message)
    assert envelope.message_id == "<\ufffd\ufffd@example.com>"
    assert stored.endswith(message)


# -- the fast path for common address headers ---------------------------------------------


@pytest.mark.slow
def test_the_fast_address_parser_agrees_with_email_utils_getaddresses():
    from email.utils import getaddresses

    from mq_transaction.addresses import _plain_addresses

    rng = random.Random(5321)
    noise = "abcXYZ019.-_+!#$%&'*/=?^`{|}~\u00e9\u00f6\u4f8b\u00a0\u2028 \t\r\n\x0b\x85\u3000\"()<>@,;:\\[]\x00\x7f"

    def word():
        return "".join(rng.choice("abcxyz0189_+-") for _ in range(rng.randrange(1, 6)))

    def item():
        address = f"{word()}@{word()}.{word()}"
        return rng.choice([address, f"{word()} <{address}>", f"{word()} {word()}<{address}>", f" {address} "])

    fast_path_taken = 0
    for _ in range(20_000):
        value = list(",".join(item() for _ in range(rng.randrange(1, 4))))
        for _ in range(rng.choice([0, 0, 1, 2])):
            value.insert(rng.randrange(len(value) + 1), rng.choice(noise))
        value = "".join(value)
        fast = _plain_addresses(value)
        if fast is not None:
            fast_path_taken += 1
            assert fast == [address for _name, address in getaddresses([value])], value
    assert fast_path_taken > 1000


def test_header_block_is_split_into_fields_by_the_line_rules():
    """A field's first line has a colon after a non-empty name; lines starting with a space
    or tab continue it; a blank line, or any other line, ends the header block."""
    from mq_transaction.prepare import _header_fields

    def by_lines(data):
        fields, pos = [], 0
        while pos < len(data):
            newline = data.find(b"\n", pos)
            end = len(data) if newline < 0 else newline + 1
            line = data[pos:end]
            if line in (b"\n", b"\r\n"):
                break
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] = (fields[-1][0], fields[-1][1], end)
            elif line.find(b":") > 0:
                fields.append((line[: line.find(b":")].strip().lower().decode("ascii", "replace"), pos, end))
            else:
                break
            pos = end
        return fields, pos

    rng = random.Random(822)
    pieces = [b"To", b"From", b":", b" ", b"\t", b"\n", b"\r\n", b"\r", b"a", b"\xff", b"\0", b": v", b"\n ", b"\n\n"]
    for _ in range(20_000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(25)))
        assert _header_fields(data) == by_lines(data), data
