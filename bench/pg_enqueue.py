"""Enqueue cost of the database queue inside a request: what one ``send()`` adds.

A "request" is one transaction (an explicit manager, as pyramid_tm gives each request)
that inserts one app row through a zope.sqlalchemy session and commits. The same request
runs with and without one ``QueuedMailer(DatabaseQueue(url), session=session).send()``
(same-transaction mode: the mail row and its NOTIFY in the app's own commit, one round
trip). Prints p50/p99 request time for each and the milliseconds added.
Target: at most 1 ms added at p50 in same-transaction mode.

The server is a private PostgreSQL started from the machine's binaries with its default
durability (fsync on, synchronous commit), or ``MQ_TEST_POSTGRES_URL``. Each variant runs
``--runs`` times, interleaved; figures are the medians over runs.

    .venv/bin/python bench/pg_enqueue.py [--count 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import sqlalchemy as sa
import transaction
import zope.sqlalchemy
from sqlalchemy.orm import Session

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from postgres_server import PostgresServer, server_bindir  # noqa: E402

from mq_transaction import DatabaseQueue, QueuedMailer  # noqa: E402

MESSAGE = (
    b"From: App <app@example.com>\r\nTo: alice@example.com, bob@example.net\r\nCc: carol@example.org\r\n"
    b"Subject: Benchmark\r\nMessage-ID: <bench@example.com>\r\nDate: Sat, 28 Nov 2026 15:11:36 +0000\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + b"x" * 1700 + b"\r\n"
)

metadata = sa.MetaData()
users = sa.Table(
    "bench_users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.Text, nullable=False),
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_requests(
    engine: sa.Engine,
    count: int,
    mailer_factory: Callable[[Session, transaction.TransactionManager], QueuedMailer] | None,
) -> list[float]:
    """Time ``count`` requests; each inserts an app row and, with a mailer, sends one message."""
    tm = transaction.TransactionManager(explicit=True)
    session = Session(engine)
    zope.sqlalchemy.register(session, transaction_manager=tm)
    mailer = mailer_factory(session, tm) if mailer_factory else None
    times = []
    for number in range(count):
        started = time.perf_counter()
        with tm:
            session.execute(users.insert().values(email=f"user{number}@example.com"))
            zope.sqlalchemy.mark_changed(session)  # Core through a session: say so, or it rolls back
            if mailer is not None:
                mailer.send(MESSAGE)
        times.append(time.perf_counter() - started)
    session.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--no-fsync", action="store_true", help="run the server with fsync off: the CPU cost alone, without the disk"
    )
    args = parser.parse_args()

    server = None
    url = os.environ.get("MQ_TEST_POSTGRES_URL")
    if not url:
        bindir = server_bindir()
        if bindir is None:
            print("bench/pg_enqueue.py: no PostgreSQL server binaries: apt-get install postgresql", file=sys.stderr)
            return 2
        server = PostgresServer(bindir, durable=not args.no_fsync)
        server.start()
        url = server.url()
    try:
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS bench_users, mq_messages, mq_schema")
        metadata.create_all(engine)
        queue = DatabaseQueue(url)
        queue.init_db()
        variants: dict[str, Callable[[Session, transaction.TransactionManager], QueuedMailer] | None] = {
            "no mail": None,
            "same transaction": lambda session, tm: QueuedMailer(
                queue, transaction_manager=tm, session=session, default_sender="app@example.com"
            ),
        }
        run_requests(engine, 200, variants["same transaction"])  # warm up both pools and the caches
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for run in range(args.runs):
            order = list(variants) if run % 2 == 0 else list(reversed(variants))
            for name in order:
                times = run_requests(engine, args.count, variants[name])
                results[name].append((percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000))
                with engine.begin() as connection:
                    connection.exec_driver_sql("TRUNCATE bench_users, mq_messages")
        base50 = statistics.median(p50 for p50, _ in results["no mail"])
        base99 = statistics.median(p99 for _, p99 in results["no mail"])
        where = "MQ_TEST_POSTGRES_URL" if server is None else "a private server, fsync "
        where += "" if server is None else ("on" if server.durable else "off")
        print(f"{args.count} requests x {args.runs} runs, PostgreSQL: {where}, load average {os.getloadavg()[0]:.1f}")
        print(f"{'request':<18} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
        for name in variants:
            p50 = statistics.median(value for value, _ in results[name])
            p99 = statistics.median(value for _, value in results[name])
            print(f"{name:<18} {p50:8.3f} {p99:8.3f} {p50 - base50:10.3f} {p99 - base99:10.3f}")
        added = statistics.median(value for value, _ in results["same transaction"]) - base50
        print(f"target: same transaction adds <= 1 ms at p50: {'met' if added <= 1.0 else 'NOT met'} ({added:.3f} ms)")
        queue.dispose()
        engine.dispose()
    finally:
        if server is not None:
            server.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
