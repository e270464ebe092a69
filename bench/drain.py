"""Drain benchmark: how fast ``mq-send`` empties a queue, against zope.sendmail and a bare client.

Queues N distinct 2 KB messages (one recipient each, one committed transaction each; the
setup is not timed), then drains them into a fast SMTP sink on 127.0.0.1 with:

* ours: the real ``mq-send`` command as a subprocess, default settings (fully durable:
  claim, then unlink and fsync of the directory right after each 250);
* zope.sendmail 7.3's ``zope-sendmail`` (one pass, no ``--daemon``), the fastest existing
  tool: a new connection per message, no fsync at all; its queue filled by its own
  ``QueuedMailDelivery`` in transactions;
* a bare reference client (``bench/_reference_client.py``): plain smtplib over one
  reused connection, reading each file, ``sendmail()``, unlink, fsync of the directory:
  the least a durable sender can do.
* for information, ours again with ``mq.smtp_connections = 2`` (``--connections``; the
  setting comes from an ini file, as in production; the default stays one connection).

Each drain is a subprocess timed from start to exit (start-up included; the cost of a
run over an empty queue is shown apart). Its peak memory and CPU time come from
``wait4()``. The sink counts sessions and messages, so every drain is checked: all N
messages arrived, the queue is empty, the exit status is 0. Each drain runs ``--runs``
times, interleaved (A B C, C B A...), each after a ``sync``; the median run is shown,
and each ratio is the median of the per-run ratios of drains taken back to back.
Targets: ours >= 2 x zope-sendmail, ours >= 0.8 x reference, peak RSS < 60 MB.

The sink is Postfix's ``smtp-sink`` (found on the PATH or in the cache, else fetched from
Debian's ``postfix`` package and unpacked, not installed); aiosmtpd is the fallback, with a
warning, as it caps near 600-850 msg/s and would measure itself rather than the senders.

``--profile`` instead drains one queue in-process with ``Sender(settings).run()`` under
cProfile and prints where the time goes.

    .venv/bin/python bench/drain.py [--count 2000] [--runs 5] [--dir /tmp] [--sink auto]
    .venv/bin/python bench/drain.py --profile [--count 2000]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import transaction

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from _sink import Sink, start_sink  # noqa: E402

from mq_transaction import MessageQueue, QueuedMailer  # noqa: E402

SENDER = "app@example.com"
MESSAGE_SIZE = 2048
BIN = os.path.dirname(sys.executable)
MEMORY_TARGET_MB = 60


@dataclass(frozen=True)
class Message:
    sender: str
    recipients: tuple[str, ...]
    content: bytes


def make_messages(count: int, recipients: int = 1) -> list[Message]:
    """``count`` distinct ready-made messages of MESSAGE_SIZE bytes, CRLF line endings."""
    messages = []
    for n in range(count):
        to = tuple(f"user{n}.{r}@example.org" for r in range(recipients))
        head = (
            f"From: App <{SENDER}>\r\n"
            f"To: {', '.join(to)}\r\n"
            f"Subject: Drain benchmark message {n}\r\n"
            f"Message-ID: <drain-{n}-{os.getpid()}@example.com>\r\n"
            "Date: Sat, 28 Nov 2026 15:11:36 +0000\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
        ).encode()
        line = b"The quick brown fox jumps over the lazy dog, message %06d.\r\n" % n
        body = (line * (MESSAGE_SIZE // len(line) + 1))[: MESSAGE_SIZE - len(head) - 2] + b"\r\n"
        messages.append(Message(SENDER, to, head + body))
    return messages


# -- filling each sender's queue (not timed) ------------------------------------------------


def fill_ours(directory: str, messages: list[Message]) -> None:
    # fsync off for the setup only: the drain runs mq-send with its defaults (fsync on).
    mailer = QueuedMailer(MessageQueue(directory, fsync=False))
    for message in messages:
        with transaction.manager:
            mailer.send(message.content)


def fill_zope(directory: str, messages: list[Message]) -> None:
    from zope.sendmail.delivery import QueuedMailDelivery

    delivery = QueuedMailDelivery(directory)
    for message in messages:
        with transaction.manager:
            delivery.send(message.sender, list(message.recipients), message.content)


def fill_reference(directory: str, messages: list[Message]) -> None:
    # The reference client's format: first line "SENDER RCPT,RCPT", then the message.
    os.makedirs(os.path.join(directory, "tmp"))
    os.makedirs(os.path.join(directory, "new"))
    for n, message in enumerate(messages):
        with open(os.path.join(directory, "new", f"{n:08d}"), "wb") as handle:
            handle.write(f"{message.sender} {','.join(message.recipients)}\n".encode() + message.content)


# -- the drains -----------------------------------------------------------------------------


def command(script: str, module: str) -> list[str]:
    """The console script beside this Python, else ``python -m module``."""
    path = os.path.join(BIN, script)
    return [path] if os.access(path, os.X_OK) else [sys.executable, "-m", module]


def ours_command(directory: str, port: int) -> list[str]:
    return [
        *command("mq-send", "mq_transaction.cli_send"),
        *("--queue-dir", directory, "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "-q"),
    ]


def ours_parallel_command(directory: str, port: int, connections: int) -> list[str]:
    # mq.smtp_connections has no flag: it comes from the ini file, as in production.
    ini = directory.rstrip("/") + ".ini"
    with open(ini, "w", encoding="utf-8") as handle:
        handle.write(
            f"[app:main]\nuse = egg:mq_transaction\nmq.queue_dir = {directory}\nmq.smtp_host = 127.0.0.1\n"
            f"mq.smtp_port = {port}\nmq.smtp_connections = {connections}\n"
        )
    return [*command("mq-send", "mq_transaction.cli_send"), ini, "-q"]


def zope_command(directory: str, port: int) -> list[str]:
    return [*command("zope-sendmail", "zope.sendmail.queue"), "--hostname", "127.0.0.1", "--port", str(port), directory]


def reference_command(directory: str, port: int) -> list[str]:
    return [sys.executable, os.path.join(HERE, "_reference_client.py"), directory, "127.0.0.1", str(port)]


def files_in(*directories: str) -> int:
    return sum(len(os.listdir(d)) for d in directories if os.path.isdir(d))


def left_in_ours(directory: str) -> int:
    return sum(1 for _ in MessageQueue(directory).entries())


def left_in_zope(directory: str) -> int:
    return files_in(os.path.join(directory, "new"), os.path.join(directory, "cur"))  # dot-files too


def left_in_reference(directory: str) -> int:
    return files_in(os.path.join(directory, "new"))


@dataclass(frozen=True)
class Kind:
    key: str
    name: str
    fill: Callable[[str, list[Message]], None]
    command: Callable[[str, int], list[str]]
    left: Callable[[str], int]


def make_kinds(connections: int) -> dict[str, Kind]:
    """The drains, in their order within a run; ``connections`` > 1 adds ours with that many."""
    kinds = {
        "ours": Kind("ours", "ours (mq-send)", fill_ours, ours_command, left_in_ours),
        "zope": Kind("zope", "zope-sendmail 7.3", fill_zope, zope_command, left_in_zope),
        "reference": Kind("reference", "reference client", fill_reference, reference_command, left_in_reference),
    }
    if connections > 1:
        kinds["parallel"] = Kind(
            "parallel",
            f"ours, {connections} conns",
            fill_ours,
            lambda directory, port: ours_parallel_command(directory, port, connections),
            left_in_ours,
        )
    return kinds


RATIOS = (
    ("ours", "zope", "ours / zope-sendmail", 2.0),
    ("ours", "reference", "ours / reference client", 0.8),
)


@dataclass
class Drain:
    seconds: float
    status: int
    max_rss_kb: int
    cpu: float  # user + system seconds of the child
    stderr: str
    sessions: int = 0
    received: int = 0
    left: int = 0
    count: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def problems(self) -> list[str]:
        found = []
        if self.status != 0:
            found.append(f"exit status {self.status}: {self.stderr.strip()[-300:]}")
        if self.received != self.count:
            found.append(f"the sink received {self.received} of {self.count} messages")
        if self.left:
            found.append(f"{self.left} messages left in the queue")
        return found


TIME = "/usr/bin/time"  # GNU time: the child's own peak RSS


def run_child(argv: list[str], scratch: str) -> Drain:
    """Run ``argv`` to its end: wall time, exit status, peak RSS and CPU time.

    ``wait4()`` gives the CPU time, but not a trustworthy peak RSS: Linux carries the
    parent's high-water mark at fork across ``exec``, so every child would seem as big as
    this process. GNU time forks from its own small image and reports the child's; without
    it, /proc's VmHWM is polled while the child runs.
    """
    timed = os.access(TIME, os.X_OK)
    with tempfile.NamedTemporaryFile(dir=scratch) as errors, tempfile.NamedTemporaryFile(dir=scratch) as peak:
        if timed:
            argv = [TIME, "-o", peak.name, "-f", "%M", *argv]
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, cwd=ROOT)
        max_rss_kb = 0
        while True:
            pid, wait_status, usage = os.wait4(process.pid, 0 if timed else os.WNOHANG)
            if pid:
                break
            max_rss_kb = max(max_rss_kb, _vm_hwm_kb(process.pid))
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(wait_status)
        if timed:
            lines = peak.read().decode().split()
            max_rss_kb = int(lines[-1]) if lines and lines[-1].isdigit() else 0
        errors.seek(0)  # the child moved the shared file offset
        text = errors.read().decode(errors="replace")
    return Drain(seconds, process.returncode, max_rss_kb, usage.ru_utime + usage.ru_stime, text)


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def drain(kind: Kind, directory: str, sink: Sink, count: int, scratch: str) -> Drain:
    sessions, received = sink.settled_counts()
    result = run_child(kind.command(directory, sink.port), scratch)
    after_sessions, after_received = sink.settled_counts()
    result.sessions = after_sessions - sessions
    result.received = after_received - received
    result.left = kind.left(directory)
    result.count = count
    return result


def fixed_cost(kind: Kind, sink: Sink, scratch: str, runs: int = 3) -> float:
    """Median seconds of a run over an empty queue: start-up and housekeeping, no mail."""
    directory = os.path.join(scratch, f"empty-{kind.key}")
    kind.fill(directory, [])
    if kind.key == "zope":  # QueuedMailDelivery makes its maildir only when it sends
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(directory, sub), exist_ok=True)
    return statistics.median(run_child(kind.command(directory, sink.port), scratch).seconds for _ in range(runs))


# -- the report -----------------------------------------------------------------------------


def median_run(runs: list[Drain]) -> Drain:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def report(
    args, kinds: dict[str, Kind], sink: Sink, extensions: list[str], runs: dict[str, list[Drain]], fixed: dict
) -> int:
    print(
        f"{args.count} messages of {MESSAGE_SIZE} bytes, {args.recipients} recipient(s), one transaction each; "
        f"{args.runs} runs; median run shown"
    )
    print(f"sink: {sink.name} on 127.0.0.1:{sink.port}")
    print(f"sink offers: {' '.join(extensions)} (PIPELINING {'yes' if 'PIPELINING' in extensions else 'NO'})")
    print(f"scratch directory under {args.dir}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work skews the figures)")
    print()
    print(
        f"{'':19} {'msg/s':>6}  {'each run (msg/s)':<18} {'empty-run ms':>12} {'CPU us/msg':>10}"
        f" {'peak RSS MB':>11} {'connections':>11} {'received':>9}"
    )
    for key in kinds:
        result = median_run(runs[key])
        each = " ".join(f"{r.rate:.0f}" for r in runs[key])
        cpu = statistics.median(r.cpu / r.count for r in runs[key]) * 1e6
        rss = max(r.max_rss_kb for r in runs[key]) / 1024
        print(
            f"{kinds[key].name:19} {result.rate:6.0f}  {each:<18} {fixed[key] * 1000:12.0f} {cpu:10.0f}"
            f" {rss:11.1f} {result.sessions:11d} {result.received:9d}"
        )
    print()
    for ours, anchor, label, target in RATIOS:
        each = [a.rate / b.rate for a, b in zip(runs[ours], runs[anchor], strict=True)]
        verdict = "met" if statistics.median(each) >= target else "MISSED"
        print(
            f"{label:30} {statistics.median(each):5.2f}  (target >= {target:.1f}: {verdict}; "
            f"each run: {' '.join(f'{r:.2f}' for r in each)})"
        )
    if "parallel" in kinds:  # for information: the default is one connection
        for anchor in ("zope", "reference"):
            each = [a.rate / b.rate for a, b in zip(runs["parallel"], runs[anchor], strict=True)]
            label = f"{kinds['parallel'].name} / {kinds[anchor].name.split()[0]}"
            print(
                f"{label:30} {statistics.median(each):5.2f}  (not the default; each run: "
                f"{' '.join(f'{r:.2f}' for r in each)})"
            )
    peak = max(r.max_rss_kb for r in runs["ours"]) / 1024
    verdict = "met" if peak < MEMORY_TARGET_MB else "MISSED"
    print(f"{'ours: peak RSS':30} {peak:5.1f} MB (target < {MEMORY_TARGET_MB} MB: {verdict})")
    print()
    failed = False
    for key in kinds:
        for number, result in enumerate(runs[key], 1):
            for problem in result.problems():
                failed = True
                print(f"CHECK FAILED: {kinds[key].name}, run {number}: {problem}")
    if not failed:
        print(
            f"checked: every drain exited 0, the sink received all {args.count} messages each time, "
            "and every queue was left empty"
        )
    return 1 if failed else 0


def benchmark(args) -> int:
    messages = make_messages(args.count, args.recipients)
    kinds = make_kinds(args.connections)
    order = tuple(kinds)
    scratch = tempfile.mkdtemp(prefix="mq-drain-", dir=args.dir)
    sink = None
    try:
        sink = start_sink(args.sink, os.path.join(scratch, "sink-counters"))
        extensions = sink.extensions()
        print(f"filling {args.runs} x {len(order)} queues of {args.count} messages (not timed)...", flush=True)
        directories = {}
        for run in range(args.runs):
            for key in order:
                directories[key, run] = os.path.join(scratch, f"{key}-{run}")
                kinds[key].fill(directories[key, run], messages)
        fixed = {key: fixed_cost(kinds[key], sink, scratch) for key in order}
        runs: dict[str, list[Drain]] = {key: [] for key in order}
        for run in range(args.runs):
            # A B C, then C B A: slow drift of the disk's state hits every sender alike.
            for key in order if run % 2 == 0 else reversed(order):
                os.sync()  # no dirty pages left by the setup or the previous drain
                time.sleep(args.settle)
                result = drain(kinds[key], directories[key, run], sink, args.count, scratch)
                runs[key].append(result)
                print(
                    f"  run {run + 1} {kinds[key].name:19} {result.rate:6.0f} msg/s, "
                    f"{result.sessions} connections, {result.received} received",
                    flush=True,
                )
        print()
        return report(args, kinds, sink, extensions, runs, fixed)
    finally:
        if sink is not None:
            sink.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def profile(args) -> int:
    """Drain one queue in-process under cProfile and print where the time goes."""
    from mq_transaction.sender import Sender
    from mq_transaction.settings import parse_settings

    scratch = tempfile.mkdtemp(prefix="mq-drain-profile-", dir=args.dir)
    sink = None
    try:
        sink = start_sink(args.sink, os.path.join(scratch, "sink-counters"))
        directory = os.path.join(scratch, "queue")
        fill_ours(directory, make_messages(args.count, args.recipients))
        settings = parse_settings(
            {"mq.queue_dir": directory, "mq.smtp_host": "127.0.0.1", "mq.smtp_port": str(sink.port)}
        )
        os.sync()
        time.sleep(args.settle)
        profiler = cProfile.Profile()
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        profiler.enable()
        result = Sender(settings).run()
        profiler.disable()
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"sink: {sink.name}")
        print(
            f"in-process drain under cProfile: {result.delivered} delivered in {seconds:.2f}s "
            f"({result.delivered / seconds:.0f} msg/s, profiler overhead included), "
            f"{result.connections} connections, CPU {cpu / max(result.delivered, 1) * 1e6:.0f} us/msg, "
            f"exit status {result.exit_status}"
        )
        for order in ("tottime", "cumulative"):
            print(f"\n-- top {args.top} by {order} --")
            pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(order).print_stats(args.top)
        return 0 if result.exit_status == 0 else 1
    finally:
        if sink is not None:
            sink.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="messages per drain (default 2000)")
    parser.add_argument("--recipients", type=int, default=1, help="recipients per message (default 1)")
    parser.add_argument("--runs", type=int, default=5, help="drains of each sender (default 5)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to make the scratch directory")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds to wait after sync before each drain")
    parser.add_argument(
        "--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto", help="SMTP sink (default auto)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=2,
        help="also drain with mq.smtp_connections = N, for information (default 2; 1 to skip)",
    )
    parser.add_argument("--profile", action="store_true", help="profile an in-process drain of ours instead")
    parser.add_argument("--top", type=int, default=30, help="functions shown by --profile (default 30)")
    args = parser.parse_args(argv)
    return profile(args) if args.profile else benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
