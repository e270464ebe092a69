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

Each drain also shows where the machine's time went: the CPU seconds of the ``mq-send``
processes (their own ``getrusage``), of PostgreSQL's backends, and how busy the machine's
cores were while it ran (``/proc/stat``). On a small machine the targets are a question
of CPU: four senders must do all the work one directory sender does (SMTP, start-up, four
times over) and the database's too, on the same cores (``bench/README.md``).

``--delay SECONDS`` puts the sink at network distance (every byte delayed that long each
way, ``bench/_delay_proxy.py``): there a sender waits for round trips, not for CPU, and
several senders (each with its own SMTP sessions) pay off.

    .venv/bin/python bench/pg_drain.py [--count 2000] [--runs 3] [--sink auto] [--delay 0]
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
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from _delay_proxy import DelayProxy  # noqa: E402
from _sink import Sink, start_sink  # noqa: E402
from drain import command, fill_ours, make_messages  # noqa: E402
from postgres_server import PostgresServer, count_messages, server_bindir  # noqa: E402

from mq_transaction import DatabaseQueue  # noqa: E402
from mq_transaction.queuefile import Envelope  # noqa: E402

SENDER_COUNTS = (1, 2, 4)


def fill_database(queue: DatabaseQueue, messages) -> None:
    for message in messages:
        queue.enqueue(Envelope.new(message.sender, list(message.recipients), time.time(), ""), message.content)


@dataclass
class Drain:
    """One timed drain: wall seconds, CPU seconds of the senders and of PostgreSQL, and
    the share of the machine's CPU time that was busy meanwhile (all processes)."""

    seconds: float
    sender_cpu: float
    database_cpu: float
    busy: float


def machine_times() -> tuple[int, int]:
    """(all, idle) CPU clock ticks of the machine so far, from ``/proc/stat``."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]  # idle and iowait


def children_cpu(pid: int) -> float:
    """CPU seconds of the processes ``pid`` has waited for (PostgreSQL's ended backends)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def timed(commands: list[list[str]], postmaster: int | None = None) -> Drain:
    """Run ``commands`` together; time them until the last exits (CPU: see :class:`Drain`).

    PostgreSQL's share is the CPU of the backends that ended meanwhile (each ``mq-send``'s
    connections end with it), read from the postmaster's counters of its children.
    """
    database_before = children_cpu(postmaster) if postmaster else 0.0
    machine_before = machine_times()
    started = time.perf_counter()
    processes = [subprocess.Popen(argv, stderr=subprocess.PIPE) for argv in commands]
    sender_cpu = 0.0
    for process in processes:
        assert process.stderr is not None
        err = process.stderr.read()
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        sender_cpu += usage.ru_utime + usage.ru_stime
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(process.args)} exited {process.returncode}: {err.decode()[-2000:]}")
    seconds = time.perf_counter() - started
    machine_after = machine_times()
    database_cpu = 0.0
    if postmaster:
        time.sleep(0.3)  # the backends of the senders' connections end after them
        database_cpu = children_cpu(postmaster) - database_before
    elapsed = machine_after[0] - machine_before[0]
    busy = 1 - (machine_after[1] - machine_before[1]) / elapsed if elapsed else 0.0
    return Drain(seconds, sender_cpu, database_cpu, busy)


def drain_directory(messages, port: int, sink: Sink, scratch: str) -> Drain:
    directory = tempfile.mkdtemp(dir=scratch)
    fill_ours(directory, messages)
    before = sink.settled_counts()[1]
    drain = timed(
        [
            [*command("mq-send", "mq_transaction.cli_send"), "--queue-dir", directory]
            + ["--smtp-host", "127.0.0.1", "--smtp-port", str(port), "-q"]
        ]
    )
    arrived = sink.settled_counts()[1] - before
    if arrived != len(messages):
        raise RuntimeError(f"directory drain: {arrived} of {len(messages)} messages arrived")
    shutil.rmtree(directory)
    return drain


def drain_database(messages, senders: int, url: str, port: int, sink: Sink, postmaster: int) -> Drain:
    queue = DatabaseQueue(url)
    fill_database(queue, messages)
    queue.dispose()
    time.sleep(0.3)  # the filling connection's backend ends before the drain is measured
    before = sink.settled_counts()[1]
    argv = [*command("mq-send", "mq_transaction.cli_send"), "--queue-url", url]
    argv += ["--smtp-host", "127.0.0.1", "--smtp-port", str(port), "-q"]
    drain = timed([argv] * senders, postmaster)
    arrived = sink.settled_counts()[1] - before
    left = count_messages(url)
    if arrived != len(messages) or left:
        raise RuntimeError(f"database drain, {senders} senders: {arrived} of {len(messages)} arrived, {left} rows left")
    return drain


def compile_bytecode() -> None:
    """Byte-compile the package, as ``pip install`` does: an editable install run with
    ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module at every start."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", os.path.join(os.path.dirname(HERE), "mq_transaction")],
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each way between senders and sink")
    args = parser.parse_args()
    bindir = server_bindir()
    if bindir is None:
        print("bench/pg_drain.py: no PostgreSQL server binaries: apt-get install postgresql", file=sys.stderr)
        return 2
    compile_bytecode()
    scratch = tempfile.mkdtemp(prefix="mq-pg-drain-")
    server = PostgresServer(bindir, durable=True)
    sink = None
    try:
        server.start()
        url = server.url()
        with open(os.path.join(server.datadir, "postmaster.pid")) as pid_file:
            postmaster = int(pid_file.readline())
        DatabaseQueue(url).init_db()
        sink = start_sink(args.sink, os.path.join(scratch, "sink-counts"))
        port = DelayProxy(sink.port, args.delay).port if args.delay else sink.port
        messages = make_messages(args.count)
        names = ["directory, 1 sender"] + [f"database, {k} sender{'s' if k > 1 else ''}" for k in SENDER_COUNTS]
        drains: dict[str, list[Drain]] = {name: [] for name in names}
        for run in range(args.runs):
            order = names if run % 2 == 0 else list(reversed(names))
            for name in order:
                if name.startswith("directory"):
                    drains[name].append(drain_directory(messages, port, sink, scratch))
                else:
                    senders = int(name.split(", ")[1].split()[0])
                    drains[name].append(drain_database(messages, senders, url, port, sink, postmaster))
        where = f", {args.delay * 1000:.0f} ms away each way" if args.delay else ""
        print(
            f"{args.count} messages x {args.runs} runs into {sink.name}{where}; PostgreSQL fsync on; "
            f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'drain (medians)':<22} {'seconds':>8} {'msg/s':>8} {'x directory':>12} "
            f"{'sender CPU s':>13} {'database CPU s':>15} {'cores busy':>11}"
        )
        base = statistics.median(drain.seconds for drain in drains[names[0]])
        rates = {}
        for name in names:
            seconds = statistics.median(drain.seconds for drain in drains[name])
            rates[name] = args.count / seconds
            sender_cpu = statistics.median(drain.sender_cpu for drain in drains[name])
            database_cpu = statistics.median(drain.database_cpu for drain in drains[name])
            busy = statistics.median(drain.busy for drain in drains[name])
            print(
                f"{name:<22} {seconds:8.2f} {rates[name]:8.0f} {base / seconds:12.2f} "
                f"{sender_cpu:13.2f} {database_cpu:15.2f} {busy:11.0%}"
            )
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
