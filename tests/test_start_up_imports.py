"""What ``mq-send`` imports to start: its start-up is part of every cron run and of the
loopback drain figure (``bench/drain.py``), so it leaves out what a sender never uses."""

from __future__ import annotations

import subprocess
import sys

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
