"""Enqueue benchmark: how fast QueuedMailer queues mail, against the disk and zope.sendmail.

Queues N prepared messages (2 KB, 3 recipients), each in its own committed transaction,
and prints messages per second and the p50/p99 time of send() and of the commit (the
time ``transaction.commit()`` spends, with our data manager the only resource). In the
same run it measures, on the same bytes and the same file system:

* the raw durable-write limit: open O_EXCL, write, fsync, close, rename into another
  directory, fsync that directory, no mail code at all;
* zope.sendmail's QueuedMailDelivery (the fastest existing tool; it never fsyncs);
* ours again with ``MessageQueue(path, fsync=False)``.

Each measurement runs ``--runs`` times, interleaved (A B C D, D C B A...), each after a
``sync``; the median run is shown, and each ratio is the median of the per-run ratios of
two measurements taken back to back.
Targets: durable ours >= 0.8 x raw limit; fsync-off ours >= 1.0 x zope.sendmail.

    .venv/bin/python bench/enqueue.py [--count 2000] [--runs 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import transaction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mq_transaction import MessageQueue, QueuedMailer  # noqa: E402

SENDER = "app@example.com"
RECIPIENTS = ("alice@example.com", "bob@example.net", "carol@example.org")
MESSAGE_SIZE = 2048


def make_messages(count: int) -> list[bytes]:
    """``count`` distinct ready-made messages of MESSAGE_SIZE bytes with 3 recipients."""
    messages = []
    for n in range(count):
        head = (
            f"From: App <{SENDER}>\r\n"
            f"To: Alice <{RECIPIENTS[0]}>, {RECIPIENTS[1]}\r\n"
            f"Cc: {RECIPIENTS[2]}\r\n"
            f"Subject: Benchmark message {n}\r\n"
            f"Message-ID: <bench-{n}-{os.getpid()}@example.com>\r\n"
            "Date: Sat, 28 Nov 2026 15:11:36 +0000\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
        ).encode()
        line = b"The quick brown fox jumps over the lazy dog, message %06d.\r\n" % n
        body = (line * (MESSAGE_SIZE // len(line) + 1))[: MESSAGE_SIZE - len(head)]
        messages.append(head + body)
    return messages


@dataclass
class Result:
    name: str
    seconds: float
    count: int
    send: list[float] = field(default_factory=list)  # seconds per send() call
    commit: list[float] = field(default_factory=list)  # seconds per transaction.commit()
    cpu: float = 0.0  # CPU seconds (user + system) of the whole run: less sensitive to disk noise

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench_raw(messages: list[bytes], directory: str) -> Result:
    """The disk's durable-write limit: what any maildir-style queue must do, and nothing else."""
    tmp, new = os.path.join(directory, "tmp"), os.path.join(directory, "new")
    os.makedirs(tmp)
    os.makedirs(new)
    start = time.perf_counter()
    for n, message in enumerate(messages):
        name = f"{n:08d}"
        source = os.path.join(tmp, name)
        fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.write(fd, message)
        os.fsync(fd)
        os.close(fd)
        os.rename(source, os.path.join(new, name))
        dir_fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dir_fd)
        os.close(dir_fd)
    return Result("raw durable write", time.perf_counter() - start, len(messages))


def bench_ours(messages: list[bytes], directory: str, fsync: bool) -> Result:
    mailer = QueuedMailer(MessageQueue(directory, fsync=fsync))
    result = Result(f"ours, fsync {'on' if fsync else 'off'}", 0.0, len(messages))
    clock = time.perf_counter
    start = clock()
    for message in messages:
        transaction.begin()
        t0 = clock()
        mailer.send(message)
        t1 = clock()
        transaction.commit()
        t2 = clock()
        result.send.append(t1 - t0)
        result.commit.append(t2 - t1)
    result.seconds = clock() - start
    assert len(os.listdir(os.path.join(directory, "new"))) == len(messages)
    return result


def bench_zope(messages: list[bytes], directory: str) -> Result:
    from zope.sendmail.delivery import QueuedMailDelivery

    delivery = QueuedMailDelivery(directory)
    result = Result("zope.sendmail 7.3", 0.0, len(messages))
    clock = time.perf_counter
    start = clock()
    for message in messages:
        transaction.begin()
        t0 = clock()
        delivery.send(SENDER, RECIPIENTS, message)
        t1 = clock()
        transaction.commit()
        t2 = clock()
        result.send.append(t1 - t0)
        result.commit.append(t2 - t1)
    result.seconds = clock() - start
    assert len(os.listdir(os.path.join(directory, "new"))) == len(messages)
    return result


def median_run(runs: list[Result]) -> Result:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


ORDER = ("raw", "durable", "zope", "fast")
#: Each ratio compares two measurements taken one right after the other in the same run.
RATIOS = (
    ("durable", "raw", "durable ours / raw durable-write limit", 0.8),
    ("fast", "zope", "fsync-off ours / zope.sendmail", 1.0),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="messages per run (default 2000)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement (default 5)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to make the scratch directory")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds to wait after sync before each")
    args = parser.parse_args(argv)

    messages = make_messages(args.count)
    scratch = tempfile.mkdtemp(prefix="mq-bench-", dir=args.dir)
    benches: dict[str, Callable[[str], Result]] = {
        "raw": lambda d: bench_raw(messages, d),
        "durable": lambda d: bench_ours(messages, d, fsync=True),
        "zope": lambda d: bench_zope(messages, d),
        "fast": lambda d: bench_ours(messages, d, fsync=False),
    }
    runs: dict[str, list[Result]] = {key: [] for key in ORDER}
    try:
        for run in range(args.runs):
            # A B C D, then D C B A: slow drift of the disk's state hits every bench alike.
            for key in ORDER if run % 2 == 0 else reversed(ORDER):
                directory = os.path.join(scratch, f"{key}-{run}")
                # Start with no dirty pages or journal work left by the previous measurement.
                # Nothing is deleted until the end: ext4 is slow to create files for a while
                # after many were deleted, which would slow whatever runs next.
                os.sync()
                time.sleep(args.settle)
                cpu = time.process_time()
                result = benches[key](directory)
                result.cpu = time.process_time() - cpu
                runs[key].append(result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"{args.count} messages of {MESSAGE_SIZE} bytes, 3 recipients, one transaction each; {args.runs} runs")
    print(f"scratch directory under {args.dir}; Python {sys.version.split()[0]}; median run shown")
    print()
    print(
        f"{'':20} {'msg/s':>7}  {'each run (msg/s)':<32} {'CPU us/msg':>10} {'send p50 ms':>11} {'p99':>6}"
        f" {'commit p50 ms':>13} {'p99':>6}"
    )
    for key in ORDER:
        result = median_run(runs[key])
        each = " ".join(f"{r.rate:.0f}" for r in runs[key])
        cpu = statistics.median(r.cpu / r.count for r in runs[key]) * 1e6
        line = f"{result.name:20} {result.rate:7.0f}  {each:<32} {cpu:10.0f}"
        if result.send:
            line += (
                f" {ms(percentile(result.send, 0.5)):>11} {ms(percentile(result.send, 0.99)):>6}"
                f" {ms(percentile(result.commit, 0.5)):>13} {ms(percentile(result.commit, 0.99)):>6}"
            )
        print(line)
    print()
    for ours, anchor, label, target in RATIOS:
        each = [a.rate / b.rate for a, b in zip(runs[ours], runs[anchor], strict=True)]
        verdict = "met" if statistics.median(each) >= target else "MISSED"
        print(
            f"{label:40} {statistics.median(each):5.2f}  (target >= {target:.1f}: {verdict}; "
            f"each run: {' '.join(f'{r:.2f}' for r in each)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
