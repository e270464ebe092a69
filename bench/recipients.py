"""How long ``send()`` takes for one message to 50,000 recipients (issue 12 item 12).

Three forms of the same envelope: the ``recipients=`` argument, a ``To:`` header of bare
addresses, and a ``To:`` header of ``"Name" <address>`` items. For each, the best of a few
runs of ``prepare()`` alone (validation, duplicates, header parsing) and of ``send()`` with
its commit (the queue file written; fsync off, so the disk does not dominate).

    .venv/bin/python bench/recipients.py [count]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import transaction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mq_transaction import MessageQueue, QueuedMailer  # noqa: E402


def best_seconds(function, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    addresses = [f"user{n}@example.com" for n in range(count)]
    head = b"From: app@example.com\r\nSubject: many\r\nMessage-ID: <many@example.com>\r\n"
    forms = {
        "recipients= argument": (head + b"To: list@example.com\r\n\r\nbody\r\n", addresses),
        "To: a@b, ...": (head + b"To: " + b",\r\n ".join(a.encode() for a in addresses) + b"\r\n\r\nbody\r\n", None),
        'To: "Name" <a@b>, ...': (
            head + b"To: " + b",\r\n ".join(f'"User {a}" <{a}>'.encode() for a in addresses) + b"\r\n\r\nbody\r\n",
            None,
        ),
    }
    with tempfile.TemporaryDirectory() as directory:
        mailer = QueuedMailer(MessageQueue(os.path.join(directory, "queue"), fsync=False))

        def send(message, recipients):
            with transaction.manager:
                mailer.send(message, recipients=recipients)

        print(f"{count:,} recipients, best of 3 (seconds)")
        print(f"{'form':26} {'prepare()':>10} {'send()+commit':>14}")
        for name, (message, recipients) in forms.items():
            assert len(mailer.prepare(message, recipients=recipients).recipients) == count  # real work
            prepare = best_seconds(lambda: mailer.prepare(message, recipients=recipients))  # noqa: B023
            sent = best_seconds(lambda: send(message, recipients))  # noqa: B023
            print(f"{name:26} {prepare:10.3f} {sent:14.3f}")
        print("target: send()+commit well under 1 s for 50,000 recipients (it took 24-29 s when quadratic)")


if __name__ == "__main__":
    main()
