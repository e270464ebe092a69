"""Drain benchmark for the database queue: 1, 2 and 4 ``mq-send`` against one directory sender.

Queues N distinct 2 KB messages (the queueing is not timed), then drains them into one
fast SMTP sink on 127.0.0.1 (Postfix's ``smtp-sink``, see ``bench/_sink.py``) with:

* ``directory, 1 sender``: ``mq-send --queue-dir`` (default settings: fsync on);
* ``database, K senders`` for K in 1, 2, 4: K ``mq-send --queue-url`` processes started
  together on one database queue, in a private PostgreSQL server with its default
  durability (fsync on, synchronous commit); the drain ends when the last one exits.

Each drain is timed from the start of its processes to the exit of the last one and
checked: the sink got all N messages and the queue is empty. Each runs ``--runs`` times,
interleaved; the median is shown. Targets: 4 database senders drain faster than one
directory sender; one database sender at least 0.7 x one directory sender.

    .venv/bin/python bench/pg_drain.py [--count 2000] [--runs 3] [--sink auto]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from _sink import Sink, start_sink  # noqa: E402
from drain import command, fill_ours, make_messages  # noqa: E402
from postgres_server import PostgresServer, count_messages, server_bindir  # noqa: E402

from mq_transaction import DatabaseQueue  # noqa: E402
from mq_transaction.queuefile import Envelope  # noqa: E402

SENDER_COUNTS = (1, 2, 4)


def fill_database(queue: DatabaseQueue, messages) -> None:
    for message in messages:
        queue.enqueue(Envelope.new(message.sender, list(message.recipients), time.time(), ""), message.content)


def timed(commands: list[list[str]]) -> float:
    started = time.perf_counter()
    processes = [subprocess.Popen(argv, stderr=subprocess.PIPE) for argv in commands]
    for process in processes:
        _out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(process.args)} exited {process.returncode}: {err.decode()[-2000:]}")
    return time.perf_counter() - started


def drain_directory(messages, sink: Sink, scratch: str) -> float:
    directory = tempfile.mkdtemp(dir=scratch)
    fill_ours(directory, messages)
    before = sink.settled_counts()[1]
    seconds = timed(
        [
            [*command("mq-send", "mq_transaction.cli_send"), "--queue-dir", directory]
            + ["--smtp-host", "127.0.0.1", "--smtp-port", str(sink.port), "-q"]
        ]
    )
    arrived = sink.settled_counts()[1] - before
    if arrived != len(messages):
        raise RuntimeError(f"directory drain: {arrived} of {len(messages)} messages arrived")
    shutil.rmtree(directory)
    return seconds


def drain_database(messages, senders: int, url: str, sink: Sink) -> float:
    queue = DatabaseQueue(url)
    fill_database(queue, messages)
    queue.dispose()
    before = sink.settled_counts()[1]
    argv = [*command("mq-send", "mq_transaction.cli_send"), "--queue-url", url]
    argv += ["--smtp-host", "127.0.0.1", "--smtp-port", str(sink.port), "-q"]
    seconds = timed([argv] * senders)
    arrived = sink.settled_counts()[1] - before
    left = count_messages(url)
    if arrived != len(messages) or left:
        raise RuntimeError(f"database drain, {senders} senders: {arrived} of {len(messages)} arrived, {left} rows left")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto")
    args = parser.parse_args()
    bindir = server_bindir()
    if bindir is None:
        print("bench/pg_drain.py: no PostgreSQL server binaries: apt-get install postgresql", file=sys.stderr)
        return 2
    scratch = tempfile.mkdtemp(prefix="mq-pg-drain-")
    server = PostgresServer(bindir, durable=True)
    sink = None
    try:
        server.start()
        url = server.url()
        DatabaseQueue(url).init_db()
        sink = start_sink(args.sink, os.path.join(scratch, "sink-counts"))
        messages = make_messages(args.count)
        names = ["directory, 1 sender"] + [f"database, {k} sender{'s' if k > 1 else ''}" for k in SENDER_COUNTS]
        times: dict[str, list[float]] = {name: [] for name in names}
        for run in range(args.runs):
            order = names if run % 2 == 0 else list(reversed(names))
            for name in order:
                if name.startswith("directory"):
                    times[name].append(drain_directory(messages, sink, scratch))
                else:
                    times[name].append(drain_database(messages, int(name.split(", ")[1].split()[0]), url, sink))
        print(
            f"{args.count} messages x {args.runs} runs into {sink.name}; PostgreSQL fsync on; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(f"{'drain':<22} {'seconds':>8} {'msg/s':>8} {'x directory':>12}")
        base = statistics.median(times[names[0]])
        rates = {}
        for name in names:
            seconds = statistics.median(times[name])
            rates[name] = args.count / seconds
            print(f"{name:<22} {seconds:8.2f} {rates[name]:8.0f} {base / seconds:12.2f}")
        four, one = rates[names[-1]] / rates[names[0]], rates[names[1]] / rates[names[0]]
        verdict = {True: "met", False: "NOT met"}
        print(f"target: 4 database senders faster than 1 directory sender: {verdict[four > 1]} ({four:.2f}x)")
        print(f"target: 1 database sender >= 0.7 x 1 directory sender: {verdict[one >= 0.7]} ({one:.2f}x)")
    finally:
        if sink is not None:
            sink.stop()
        server.remove()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
