"""Without the ``postgresql`` extra, every database-queue command says so in one line.

The extra's absence is simulated in a child process (``sys.modules['sqlalchemy'] = None``
makes ``import sqlalchemy`` raise ``ImportError``, as it does where the extra was never
installed; the same for psycopg); the project's own venv has the extra, so it cannot be
really missing here. The queue reads and writes through psycopg alone: SQLAlchemy is
needed to create the tables (``init-db``), psycopg by every command.
"""

from __future__ import annotations

import subprocess
import sys

WITHOUT = (
    "import sys\n"
    "sys.modules[sys.argv.pop(1)] = None\n"
    "from mq_transaction import cli_queue\n"
    "sys.exit(cli_queue.main(sys.argv[1:]))\n"
)
EXTRA_ERROR = (
    "mq-queue: error: mq.queue_url: the database queue needs the postgresql extra: "
    "pip install 'mq_transaction[postgresql]'"
)


def run_mq_queue_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT, module, *args], capture_output=True, text=True, timeout=60)


def run_mq_queue_without_sqlalchemy(*args: str) -> subprocess.CompletedProcess[str]:
    return run_mq_queue_without("sqlalchemy", *args)


def test_init_db_without_the_extra_is_a_one_line_error():
    result = run_mq_queue_without_sqlalchemy("--queue-url", "postgresql://app@127.0.0.1:1/db", "init-db")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(EXTRA_ERROR), result.stderr
    assert "Traceback" not in result.stderr


def test_init_db_sql_without_the_extra_is_a_one_line_error():
    result = run_mq_queue_without_sqlalchemy("--queue-url", "postgresql://app@127.0.0.1:1/db", "init-db", "--sql")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(EXTRA_ERROR), result.stderr


def test_every_command_without_psycopg_is_a_one_line_error():
    for args in (["status"], ["list"], ["init-db"]):
        result = run_mq_queue_without("psycopg", "--queue-url", "postgresql://app@127.0.0.1:1/db", *args)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(EXTRA_ERROR), result.stderr
