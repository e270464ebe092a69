"""A real PostgreSQL server for the database queue's tests, and a fresh database per test.

One private server per test run (session scope), started from the machine's server
binaries (``pg_config --bindir``, else Debian's ``/usr/lib/postgresql/*/bin``): ``initdb``
into a temporary directory, ``pg_ctl start`` on a free 127.0.0.1 port. PostgreSQL refuses
to run as root, so when the tests run as root the server runs as the unprivileged
``postgres`` account (``runuser``), with its data directory under a temporary directory
that account owns.

``MQ_TEST_POSTGRES_URL=postgresql://user:pw@host/db`` uses an existing server instead
(the user needs CREATEDB); tests that restart the server still need the binaries.

No binaries and no URL: the tests fail, naming the package to install. They never skip.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

SERVER_ACCOUNT = "postgres"
INSTALL_HINT = (
    "the database queue's tests need a PostgreSQL server: install Debian's `postgresql` package "
    "(apt-get install postgresql), or set MQ_TEST_POSTGRES_URL to a server where the user may CREATE DATABASE"
)


def server_bindir() -> str | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when there is none."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            candidates.append(result.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """A private PostgreSQL server in a temporary directory, on 127.0.0.1.

    ``durable=False`` (the tests) turns fsync off; the benchmarks keep PostgreSQL's defaults.

    ``url(dbname)`` is an SQLAlchemy URL for the psycopg 3 driver; ``restart()`` runs
    ``pg_ctl restart`` (fast mode: open connections are cut, as in a fail-over).
    """

    def __init__(self, bindir: str, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.as_root = os.geteuid() == 0
        self.base = tempfile.mkdtemp(prefix="mq-test-postgres-")
        self.datadir = os.path.join(self.base, "data")
        self.logfile = os.path.join(self.base, "server.log")
        self.port = 0
        if self.as_root:
            account = pwd.getpwnam(SERVER_ACCOUNT)
            os.chown(self.base, account.pw_uid, account.pw_gid)
        self._run("initdb", "--no-sync", "--auth=trust", "--username=postgres", "--encoding=UTF8", "-D", self.datadir)

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        command = [os.path.join(self.bindir, tool), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_ACCOUNT, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.base)
        if result.returncode != 0:
            log = ""
            if os.path.exists(self.logfile):
                with open(self.logfile, encoding="utf-8", errors="replace") as handle:
                    log = handle.read()[-3000:]
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{result.stdout}{result.stderr}\n{log}")
        return result

    def start(self) -> None:
        """Start the server on a free port (a new one on first start, the same one after)."""
        for attempt in itertools.count():
            self.port = self.port or free_port()
            options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c max_connections=200"
            if not self.durable:  # a throw-away server: durability is not what the tests measure
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            try:
                self._run("pg_ctl", "-D", self.datadir, "-l", self.logfile, "-o", options, "-w", "-t", "60", "start")
                return
            except RuntimeError:
                if attempt >= 2:
                    raise
                self.port = 0  # someone took the port between the probe and the bind

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` kills it as a crash would)."""
        self._run("pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        """True while the server runs (``pg_ctl status``)."""
        try:
            self._run("pg_ctl", "-D", self.datadir, "status")
        except RuntimeError:
            return False
        return True

    def restart(self) -> None:
        """``pg_ctl restart``: every connection is cut; the server comes back on the same port."""
        self.stop()
        self.start()

    def url(self, dbname: str = "postgres") -> str:
        """An SQLAlchemy URL of database ``dbname`` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the whole run (needs the server binaries)."""
    bindir = server_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_admin_url(request) -> str:
    """The URL of a database on a server where the tests may create databases."""
    configured = os.environ.get("MQ_TEST_POSTGRES_URL")
    if configured:
        return configured
    return request.getfixturevalue("postgres_server").url()


_database_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_admin_url) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    import sqlalchemy as sa

    admin_url = sa.make_url(postgres_admin_url)
    name = f"mq_test_{os.getpid()}_{next(_database_numbers)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_queue_database(postgres_admin_url) -> Iterator[str]:
    """The URL of the run's one database holding the queue's tables (``init-db``, once)."""
    import sqlalchemy as sa

    from mq_transaction import DatabaseQueue

    admin_url = sa.make_url(postgres_admin_url)
    name = f"mq_queue_{os.getpid()}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    queue = DatabaseQueue(url)
    queue.init_db()
    queue.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def postgres_queue_url(postgres_queue_database) -> str:
    """The URL of a database holding the queue's tables, empty, and nobody connected to it.

    One database serves every test (a new database per test costs about ten times as
    much): before each test every other connection to it is cut (whatever an earlier test
    left open, a killed sender's session or a forgotten pool, goes with them) and its
    tables are emptied, so each test starts from what a new database would give it.
    """
    import sqlalchemy as sa

    from mq_transaction import database_schema

    tables = ", ".join(table.name for table in database_schema.metadata.sorted_tables if table.name != "mq_schema")
    engine = sa.create_engine(postgres_queue_database, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.exec_driver_sql(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid()"
        )
        connection.exec_driver_sql(f"TRUNCATE {tables}")
    engine.dispose()
    return postgres_queue_database


def count_messages(url: str) -> int:
    """How many rows the queue table of the database at ``url`` holds (every state)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        count = connection.execute(sa.text("select count(*) from mq_messages")).scalar()
    engine.dispose()
    return int(count or 0)


@pytest.fixture
def db_queue(postgres_url):
    """A database queue with its tables, in a fresh database; disposed of after the test."""
    from mq_transaction import DatabaseQueue

    queue = DatabaseQueue(postgres_url)
    queue.init_db()
    yield queue
    queue.dispose()
