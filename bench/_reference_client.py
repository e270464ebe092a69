"""The bare reference client for bench/drain.py: the least work a durable, connection-reusing sender does.

One smtplib connection for every message; for each file in ``MAILDIR/new`` (oldest name
first): read it, ``sendmail()`` it, unlink it and fsync the directory, so that a crash
right after the server's 250 sends the message at most once more. Nothing else: no lock,
no claim, no retry schedule, no per-recipient bookkeeping, no log. A file's first line is
its envelope, ``SENDER RCPT[,RCPT...]``; the rest is the message, sent as it is.

Standard library only, so that its start-up costs what a minimal Python program costs.

    python bench/_reference_client.py MAILDIR HOST PORT

Exit status 0 when every message was accepted for every recipient, 1 otherwise.
"""

from __future__ import annotations

import os
import smtplib
import sys


def main(argv: list[str]) -> int:
    maildir, host, port = argv[0], argv[1], int(argv[2])
    new = os.path.join(maildir, "new")
    directory = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    problems = 0
    smtp = smtplib.SMTP(host, port)
    try:
        for name in sorted(os.listdir(new)):
            path = os.path.join(new, name)
            with open(path, "rb") as handle:
                content = handle.read()
            envelope, message = content.split(b"\n", 1)
            sender, recipients = envelope.decode().split(" ", 1)
            refused = smtp.sendmail(sender, recipients.split(","), message)
            if refused:
                problems += 1  # left in new/ for another try
                continue
            os.unlink(path)
            os.fsync(directory)
        smtp.quit()
    finally:
        smtp.close()
        os.close(directory)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
