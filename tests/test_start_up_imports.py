"""What ``mq-send`` imports to start: its start-up is part of every cron run and of the
loopback drain figure (``bench/drain.py``), so it leaves out what a sender never uses."""

from __future__ import annotations

import subprocess
import sys
import time

from mq_transaction.queuefile import Envelope

MESSAGE = b"From: app@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"

PROBE = (
    "import sys\n"
    "import mq_transaction.cli_send\n"
    "print(' '.join(sorted(name for name in ('transaction', 'paste.deploy', 'sqlalchemy', 'mq_transaction.mailer')"
    " if name in sys.modules)))\n"
)


def test_the_sender_command_imports_neither_the_mailer_nor_pastedeploy_nor_sqlalchemy():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == []


def test_the_package_still_gives_every_public_name_on_first_use():
    probe = (
        "import sys, mq_transaction\n"
        "assert 'mq_transaction.mailer' not in sys.modules\n"
        "from mq_transaction import QueuedMailer, MessageQueue, DatabaseQueue\n"
        "from mq_transaction.mailer import QueuedMailer as Q\n"
        "assert QueuedMailer is Q and MessageQueue.__name__ == 'MessageQueue'\n"
        "print(sorted(set(mq_transaction.__all__) - set(dir(mq_transaction))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_database_sender_runs_on_psycopg_alone(db_queue, postgres_url, smtp_sink):
    """``mq-send --queue-url`` (the default driver) never imports SQLAlchemy: its import
    was two thirds of a database sender's start-up (bench/README.md)."""
    db_queue.enqueue(Envelope.new("app@example.com", ["bob@example.com"], time.time(), "<m@example.com>"), MESSAGE)
    probe = (
        "import sys\n"
        "from mq_transaction import cli_send\n"
        "status = cli_send.main(sys.argv[1:])\n"
        "print(status, sorted(name for name in sys.modules if name.startswith('sqlalchemy')))\n"
    )
    argv = ["--queue-url", postgres_url, "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_sink.port), "-q"]
    result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "[]"]
    assert [received.content for received in smtp_sink.received] == [MESSAGE]
    assert db_queue.due(flush=True) == []
