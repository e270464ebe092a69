"""Messages per second of one SMTP session at network distance, by what the server offers.

One ``DialogSMTP`` session sends 100 messages (3 recipients each, 1.5 KB) through
``_delay_proxy.DelayProxy`` (10 ms each way: a 20 ms round trip) to:

- aiosmtpd without PIPELINING: one command per round trip (MAIL, 3 RCPT, DATA, body: 6);
- aiosmtpd with PIPELINING, each message alone: MAIL, the RCPTs and DATA in one write, then
  the body (2);
- aiosmtpd with PIPELINING, as ``mq-send`` drains a backlog: each body and its final dot in
  one write with the next message's MAIL, RCPTs and DATA (RFC 2920 3.1), so the replies to
  one message's end and to the next one's envelope come back together (1);
- Debian's Postfix smtpd, which offers PIPELINING and CHUNKING: MAIL, the RCPTs and
  ``BDAT <size> LAST`` with the message in one write (1). It runs as in the tests
  (``tests/postfix_server.py``: needs the postfix package and root), handing each
  transaction to an aiosmtpd sink.

Prints the median of 3 runs of each, and the ceiling ``1 / (round trips x 20 ms)``.
Run: ``make bench-round-trips``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from _delay_proxy import DelayProxy  # noqa: E402
from postfix_server import PostfixSmtpd  # noqa: E402
from smtp_sinks import RecordingHandler, Sink  # noqa: E402

from mq_transaction.smtp import TLS_NONE, ServerConfig, close_session, open_session  # noqa: E402

DELAY = 0.010  # seconds each way
MESSAGES = 100
BODY = b"From: a@example.com\r\nTo: x@example.org\r\nSubject: round trips\r\n\r\n" + b"hello world\r\n" * 100


def recipients_of(number: int) -> list[str]:
    return [f"r{number}{letter}@example.org" for letter in "abc"]


def rate(port: int, follow: bool = False) -> float:
    """Messages per second over one session through a fresh delaying proxy to ``port``.

    ``follow``: offer each next message to ``send_message_bytes`` (``next_message``), as the sender does.
    """
    proxy = DelayProxy(port, DELAY)
    session = open_session(ServerConfig(host="127.0.0.1", port=proxy.port, tls=TLS_NONE, timeout=30))
    try:
        start = time.perf_counter()
        for number in range(MESSAGES):
            recipients = recipients_of(number)
            following = ("a@example.com", recipients_of(number + 1), BODY)
            offer = (lambda following=following: following) if follow and number + 1 < MESSAGES else None
            replies = session.send_message_bytes("a@example.com", recipients, BODY, offer)
            if any(replies.status(address) != "delivered" for address in recipients):
                raise RuntimeError(f"not delivered: {replies}")
        return MESSAGES / (time.perf_counter() - start)
    finally:
        close_session(session)
        proxy.stop()


def main() -> None:
    plain = Sink(RecordingHandler())
    pipelined = Sink(RecordingHandler())
    pipelined.handler.offer_pipelining = True
    behind_postfix = Sink(RecordingHandler())
    postfix = PostfixSmtpd(proxy_port=behind_postfix.port)
    try:
        cases = [
            ("no PIPELINING (aiosmtpd)", plain.port, False, 6),
            ("PIPELINING, each message alone: MAIL+RCPT+DATA in one write (aiosmtpd)", pipelined.port, False, 2),
            ("PIPELINING, a backlog: final dot + next MAIL+RCPT+DATA in one write (aiosmtpd)", pipelined.port, True, 1),
            ("PIPELINING+CHUNKING: BDAT in the same write (Postfix smtpd)", postfix.port, False, 1),
        ]
        print(f"one session, {MESSAGES} messages of 3 recipients, {2 * DELAY * 1000:.0f} ms round trip")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name, port, follow, round_trips in cases:
            median = statistics.median(rate(port, follow) for _ in range(3))
            ceiling = 1 / (round_trips * 2 * DELAY)
            print(f"{name}: {median:.1f} msg/s ({round_trips} round trip(s) a message; ceiling {ceiling:.0f} msg/s)")
    finally:
        postfix.stop()
        for sink in (plain, pipelined, behind_postfix):
            sink.stop()


if __name__ == "__main__":
    main()
