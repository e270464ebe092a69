"""What ``send()`` stores: the caller's exact bytes and a validated envelope.

The only changes ever made to a message: ``Message-ID``, ``Date`` and (from a default
sender) ``From`` headers are prepended when missing, and the ``Bcc`` and ``Resent-Bcc``
headers are removed.
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
ADDED = re.compile(rb"\A(?:Message-ID: <[^>\r\n]+>\r?\n)?(?:Date: [^\r\n]+\r?\n)?(?:From: [^\r\n]+\r?\n)?")


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
    assert added.startswith(b"Message-ID: <") and b"\nDate: " in added and b"\nFrom: app@example.com" in added
    assert added.count(eol) == 3
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

    bare = b"From: app@example.com\r\n" + bare
    with_date = b"Date: Sat, 28 Nov 2026 15:11:36 +0000\r\n" + bare
    envelope, stored = store(queued_mailer, with_date)
    assert stored == b"Message-ID: " + envelope.message_id.encode() + b"\r\n" + with_date

    with_id = b"Message-ID: <mine@example.com>\r\n" + bare
    envelope, stored = store(queued_mailer, with_id)
    date_line, rest = stored.split(b"\r\n", 1)
    assert date_line.startswith(b"Date: ") and rest == with_id
    assert envelope.message_id == "<mine@example.com>"


def test_a_folded_message_id_is_recorded_on_one_line(queued_mailer):
    message = b"Message-ID:\r\n <folded@example.com>\r\nFrom: app@example.com\r\n" + HEADERS.split(b"\r\n", 4)[4]
    envelope, stored = store(queued_mailer, message, recipients=["bob@example.com"])
    assert envelope.message_id == "<folded@example.com>"
    assert stored == message


def test_str_message_is_stored_as_utf8(queued_mailer):
    text = "From: app@example.com\nTo: bob@example.com\nSubject: caf\u00e9\nMessage-ID: <s@x>\nDate: x\n\n"
    text += "na\u00efve \u2603\n"
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
    legacy["From"] = "app@example.com"
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
    message += b"\r\nFrom: app@example.com\r\nSubject: many\r\n\r\nbody\r\n"
    envelope, stored = store(queued_mailer, message)
    assert [r.address for r in envelope.recipients] == recipients
    assert without_added_headers(stored)[1] == message


def test_commas_and_quotes_in_quoted_display_names_do_not_split_recipients():
    message = (
        b'From: app@example.com\r\nTo: "Doe, John" <john@example.com>, "O\\"Brien, Pat" <pat@example.com>\r\n'
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
    assert stored.endswith(message) and ADDED.fullmatch(stored[: -len(message)])


def test_non_ascii_sender_domain_does_not_end_up_in_the_message_id():
    prepared = prepare_message(b"From: app@example.com\r\nTo: bob@example.com\r\n\r\nx", sender=SMTPUTF8[0])
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
    prepared = prepare_message(b"From: app@example.com\r\nTo: " + header + b"\r\n\r\nbody", sender="app@example.com")
    assert prepared.recipients == (expected,)


def test_duplicate_recipients_are_stored_once():
    prepared = prepare_message(
        b"From: app@example.com\r\nTo: bob@example.com, Bob <bob@example.com>\r\n"
        b"Cc: bob@example.com, al@example.com\r\n\r\nx",
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


def test_bcc_header_is_removed_when_recipients_are_given_too(queued_mailer):
    envelope, stored = store(queued_mailer, BCC_MESSAGE, recipients=["bob@example.com", "secret@example.com"])
    assert [r.address for r in envelope.recipients] == ["bob@example.com", "secret@example.com"]
    assert b"secret" not in stored
    # Only the field's own bytes go: every other byte, the body's "Bcc:" line included, stays.
    assert stored == BCC_MESSAGE.replace(b"Bcc: secret@example.com,\r\n\tsecret2@example.com\r\n", b"")


def test_resent_bcc_is_removed_and_nothing_else_is_re_encoded(queued_mailer):
    message = (
        b"From: app@example.com\n"
        b"Resent-Bcc: hidden@example.com\n"
        b"To: =?iso-8859-1?q?Andr=E9?= <andre@example.com>\n"
        b"Subject: \xe9t\xe9 (latin-1 bytes, kept as they are)\n"
        b"Message-ID: <resent@example.com>\n"
        b"Date: Sat, 28 Nov 2026 15:11:36 +0000\n"
        b"\n"
        b"body\n"
    )
    _envelope, stored = store(queued_mailer, message, recipients=["andre@example.com", "hidden@example.com"])
    assert stored == message.replace(b"Resent-Bcc: hidden@example.com\n", b"")


def test_bcc_of_an_email_message_given_recipients_is_removed(queued_mailer):
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "bob@example.com"
    message["Bcc"] = "secret@example.com"
    message["Message-ID"] = "<obj-bcc@example.com>"
    message["Date"] = "Sat, 28 Nov 2026 15:11:36 +0000"
    message.set_content("hi\n")
    envelope, stored = store(queued_mailer, message, recipients=["bob@example.com", "secret@example.com"])
    assert [r.address for r in envelope.recipients] == ["bob@example.com", "secret@example.com"]
    assert stored == message.as_bytes().replace(b"Bcc: secret@example.com\n", b"")


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
    noise = (
        "abcXYZ019.-_+!#$%&'*/=?^`{|}~\u00e9\u00f6\u4f8b\u00a0\u2028\u2029\u202e \t\r\n\x0b\x85\u3000"
        '"()<>@,;:\\[]\x00\x7f'
    )

    def word():
        return "".join(rng.choice("abcxyz0189_+-") for _ in range(rng.randrange(1, 6)))

    def item():
        address = f"{word()}@{word()}.{word()}"
        return rng.choice(
            [
                address,
                f"{word()} <{address}>",
                f"{word()} {word()}<{address}>",
                f" {address} ",
                f'"{word()} {address}" <{address}>',
                f'"{word()}"<{address}>',
                f' "" \t<{address}>',
            ]
        )

    fast_path_taken = 0
    for _ in range(30_000):
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


# -- non-ASCII addresses in message objects (issue 10) ---------------------------------


def test_an_email_message_to_a_non_ascii_address_keeps_it_in_utf8():
    message = EmailMessage()
    message["From"] = "J\u00f6rg <j\u00f6rg@b\u00fccher.example>"
    message["To"] = "jos\u00e9@example.org, Ann <ann@b\u00fccher.example>"
    message["Subject"] = "caf\u00e9"
    message.set_content("hi\n")
    prepared = prepare_message(message)
    assert prepared.sender == "j\u00f6rg@b\u00fccher.example"
    assert prepared.recipients == ("jos\u00e9@example.org", "ann@b\u00fccher.example")
    headers = prepared.message.split(b"\n\n", 1)[0]
    assert b"=?" not in headers
    assert "To: jos\u00e9@example.org, Ann <ann@b\u00fccher.example>\n".encode() in headers
    assert prepared.message.endswith(message.as_bytes(policy=message.policy.clone(utf8=True)))


def test_a_legacy_message_to_a_non_ascii_address_keeps_it_in_utf8():
    legacy = MIMEText("plain")
    legacy["From"] = "app@example.com"
    legacy["To"] = "jos\u00e9@example.org"
    prepared = prepare_message(legacy)
    assert prepared.recipients == ("jos\u00e9@example.org",)
    assert "\nTo: jos\u00e9@example.org\n".encode() in prepared.message


def test_a_pyramid_mailer_message_to_a_non_ascii_address_keeps_it_in_utf8():
    prepared = prepare_message(pyramid_message(recipients=["jos\u00e9@example.org"], cc=[], bcc=[]))
    assert prepared.recipients == ("jos\u00e9@example.org",)
    assert "\nTo: jos\u00e9@example.org\n".encode() in prepared.message


@pytest.mark.parametrize(
    "header",
    [
        b"To: =?utf-8?q?jos=C3=A9?=@example.org",
        b"To: Jose <=?utf-8?q?jos=C3=A9?=@example.org>",
        b"To: ann@example.org, jose@=?utf-8?q?b=C3=BCcher?=.example",
        b"To: =?utf-8?b?am9zw6lAZXhhbXBsZS5vcmc=?=",
    ],
)
def test_an_encoded_word_inside_an_address_is_refused_saying_what_to_do(header):
    with pytest.raises(InvalidAddressError) as caught:
        prepare_message(b"From: app@example.com\r\n" + header + b"\r\n\r\nbody")
    text = str(caught.value)
    assert "encoded word" in text and "UTF-8" in text


def test_an_encoded_word_in_a_display_name_is_fine():
    prepared = prepare_message(b"From: app@example.com\r\nTo: =?utf-8?q?Jos=C3=A9?= <jose@example.org>\r\n\r\nx")
    assert prepared.recipients == ("jose@example.org",)


def test_an_encoded_word_in_a_recipient_argument_is_refused():
    with pytest.raises(InvalidAddressError, match="encoded word"):
        prepare_message(HEADERS, recipients=["=?utf-8?q?jos=C3=A9?=@example.org"])


def test_ascii_form_of_an_address_for_a_server_without_smtputf8():
    from mq_transaction.addresses import ascii_address

    assert ascii_address("ann@example.org") == "ann@example.org"
    assert ascii_address("ann@B\u00fccher.Example") == "ann@xn--bcher-kva.example"
    assert ascii_address("ann@fa\u00df.de") == "ann@xn--fa-hia.de"  # IDNA 2008: not "fass.de"
    with pytest.raises(InvalidAddressError, match="local part"):
        ascii_address("jos\u00e9@example.org")
    with pytest.raises(InvalidAddressError, match="A-label"):
        ascii_address("ann@i\u2764.example")


# -- From, the header section, and quoting what was passed (issue 10) --------------------


def test_a_message_without_from_gets_the_default_sender_as_from():
    bare = b"To: bob@example.com\r\nSubject: s\r\nMessage-ID: <f@x>\r\nDate: Sat, 28 Nov 2026 15:11:36 +0000\r\n\r\nx"
    prepared = prepare_message(bare, default_sender="Shop <bounces@shop.example>")
    assert prepared.message == b"From: Shop <bounces@shop.example>\r\n" + bare
    assert prepared.sender == "bounces@shop.example"
    prepared = prepare_message(bare, sender="b@example.com", default_sender="J\u00f6rg <j@example.com>")
    assert prepared.message == b"From: =?utf-8?b?SsO2cmc=?= <j@example.com>\r\n" + bare


def test_a_message_with_from_is_not_given_another():
    message = b"From: me@example.com\r\n" + HEADERS.split(b"\r\n", 1)[1]
    assert prepare_message(message, default_sender="default@example.com").message == message


@pytest.mark.parametrize("envelope", [{}, {"sender": "app@example.com"}], ids=["no-sender", "sender-argument"])
def test_a_message_without_from_and_no_default_sender_is_refused_naming_the_header(
    queued_mailer, queue_files, envelope
):
    from mq_transaction import QueuedMailer

    mailer = QueuedMailer(queued_mailer.queue)
    transaction.begin()
    with pytest.raises(InvalidMessageError, match="From"):
        mailer.send(b"To: bob@example.com\r\nSubject: s\r\n\r\nx", **envelope)
    assert queue_files("tmp") == []


@pytest.mark.parametrize("message", [b"hello", b"hello\r\n", b"\r\nbody only\r\n", "just text", b""])
def test_a_message_with_no_header_section_is_refused(queued_mailer, queue_files, message):
    transaction.begin()
    with pytest.raises(InvalidMessageError, match="no header section"):
        queued_mailer.send(message, recipients=["bob@example.com"])
    assert queue_files("tmp") == []


def test_a_line_in_the_header_section_that_is_no_field_is_refused():
    with pytest.raises(InvalidMessageError, match="blank line") as caught:
        prepare_message(b"From: app@example.com\r\nTo: bob@example.com\r\nhello there\r\n\r\nbody")
    assert "hello there" in str(caught.value)


@pytest.mark.parametrize(
    ("header", "quoted"),
    [
        (b"To: eve@@example.org", "'eve@@example.org'"),
        (b"To: ann@example.org, eve@@example.org, bob@example.org", "'eve@@example.org'"),
        (b"To: Eve <eve@@example.org>", "'Eve <eve@@example.org>'"),
        (b'To: "Doe, Eve" <eve@@example.org>, ann@example.org', "'\"Doe, Eve\" <eve@@example.org>'"),
        (b"Cc: ann@example.org (Ann), eve@@example.org", "'eve@@example.org'"),
    ],
)
def test_a_malformed_header_address_is_quoted_as_written(header, quoted):
    with pytest.raises(InvalidAddressError) as caught:
        prepare_message(b"From: app@example.com\r\n" + header + b"\r\n\r\nx")
    assert quoted in str(caught.value)


@pytest.mark.parametrize("value", ["eve@@example.org", "Eve <eve@@example.org>"])
def test_a_malformed_recipient_argument_is_quoted_as_written(value):
    with pytest.raises(InvalidAddressError) as caught:
        prepare_message(HEADERS, recipients=["ann@example.org", value])
    assert repr(value) in str(caught.value)


# -- Unicode line breaks and bidi controls, lone CR (issue 12) ---------------------------

HIDDEN = ["\u0085", "\u2028", "\u2029", "\u202e", "\u202a", "\u200e", "\u2066", "\ufeff", "\u00a0", "\u200b"]


@pytest.mark.parametrize("character", HIDDEN, ids=[f"U+{ord(c):04X}" for c in HIDDEN])
def test_invisible_and_line_breaking_characters_in_an_address_are_refused(character):
    address = f"bob{character}@example.com"
    for envelope in ({"recipients": [address]}, {"recipients": [f"Bob <{address}>"]}, {"sender": address}):
        with pytest.raises(InvalidAddressError, match=f"U\\+{ord(character):04X}"):
            prepare_message(HEADERS, **envelope)
    headers = [f"To: {address}", f"To: Bob <{address}>", f'To: "Bob" <{address}>', f"To: bob@example{character}.com"]
    for header in headers:
        with pytest.raises(InvalidAddressError):
            prepare_message(b"From: app@example.com\r\n" + header.encode() + b"\r\n\r\nx")


def test_every_invisible_or_line_breaking_code_point_is_refused_and_joiners_are_not():
    import sys
    import unicodedata

    from mq_transaction.addresses import validate_address

    refused = 0
    for code_point in range(0x80, sys.maxunicode + 1):
        character = chr(code_point)
        if unicodedata.category(character) not in ("Cc", "Cf", "Zl", "Zp", "Zs") or character in "\u200c\u200d":
            continue
        with pytest.raises(InvalidAddressError):
            validate_address(f"a{character}b@example.org")
        refused += 1
    assert refused > 150
    # Zero-width (non-)joiners are part of words in some scripts, as IDNA allows.
    assert validate_address("\u0915\u094d\u200d\u0937@example.org")


@pytest.mark.parametrize(
    "message",
    [
        b"From: app@example.com\r\nTo: bob@example.com\rBcc: evil@example.com\r\n\r\nx",
        b"From: app@example.com\r\nSubject: hi\rX-Injected: yes\r\nTo: bob@example.com\r\n\r\nx",
        b"From: app@example.com\nTo: bob@example.com\nSubject: a\r\n\tfolded\rline\n\nx",
    ],
)
def test_a_lone_cr_in_the_header_section_is_refused(message):
    with pytest.raises(InvalidMessageError, match="CR"):
        prepare_message(message)


# -- duplicates and many recipients (issue 12) -------------------------------------------


def test_addresses_differing_only_in_the_case_of_the_domain_are_one_recipient():
    given = ["a@Example.ORG", "a@example.org", "A@example.org", "Ann <a@EXAMPLE.org>"]
    assert prepare_message(HEADERS, recipients=given).recipients == ("a@Example.ORG", "A@example.org")
    message = b"From: app@example.com\r\nTo: a@Example.ORG, A@example.org\r\nCc: a@example.ORG\r\n\r\nx"
    assert prepare_message(message).recipients == ("a@Example.ORG", "A@example.org")
    non_ascii = ["j\u00f6rg@B\u00dcCHER.example", "j\u00f6rg@b\u00fccher.example"]
    assert prepare_message(HEADERS, recipients=non_ascii).recipients == (non_ascii[0],)


def test_fifty_thousand_recipients_are_all_kept_in_order():
    recipients = [f"user{n}@example.com" for n in range(50_000)]
    assert prepare_message(HEADERS, recipients=recipients + recipients[:10]).recipients == tuple(recipients)
    message = b"From: app@example.com\r\nTo: " + b",\r\n ".join(f'"U {a}" <{a}>'.encode() for a in recipients)
    assert prepare_message(message + b"\r\n\r\nx").recipients == tuple(recipients)


def test_the_one_match_address_check_agrees_with_the_explained_checks():
    from mq_transaction.addresses import _explained_problem, _quick_yes

    rng = random.Random(6531)
    pieces = [
        "a", "Z", "0", ".", "..", "-", "+", "_", "@", "@@", '"', '\\"', " ", "\\", "[", "]", "1.2.3.4", "(", ")",
        ",", "<", ">", "\u00e9", "\u4f8b", "\ud800", "\r", "\n", "\x00", "\x7f", "\x85", "\u2028", "\u202e",
        "\u00a0", "\u200d", "=?", "?=", "=?utf-8?q?x?=", "example", "org", "IPv6:", "xn--", "!#$%&'*/=?^`{|}~",
    ]  # fmt: skip
    domains = ["example.org", "b\u00fccher.example", "[192.0.2.1]", "x"]
    agreed_yes = 0
    for _ in range(50_000):
        address = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 9)))
        if rng.random() < 0.5:
            address = f"{address}@{rng.choice(domains)}"
        quick = _quick_yes(address)
        assert quick == (_explained_problem(address) is None), address
        agreed_yes += quick
    assert agreed_yes > 1000
