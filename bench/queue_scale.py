"""mq-queue on a large queue: how soon `list` starts, its memory, and how long `status` takes.

    .venv/bin/python bench/queue_scale.py [--messages 100000] [--keep DIR]

Fills a queue directory with ``--messages`` messages (80 % deferred after one 451 attempt,
10 % queued, 10 % failed after a 550; written straight as queue files, not timed), then
runs the real ``mq-queue`` command on it, each run a subprocess:

- ``list --json`` and ``list`` (plain lines) into a pipe: the time to the first message
  (the first ``"id"`` line, or the first line) and to the end, and peak memory;
- ``status`` and ``status --json``: the time to the end, and peak memory.

The targets of issue 12 item 15 for 100,000 messages: ``list`` streams (first message
within 1 s, memory flat), ``status`` within 2 s. The daemon's commit-to-delivery figure of
that item is the sender's (``bench/latency.py``). Peak memory is GNU time's ``%M`` when
``/usr/bin/time`` exists (``wait4()`` would report the benchmark's own high-water mark,
which Linux carries across ``exec``), else not shown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from mq_transaction.durations import iso_utc
from mq_transaction.queue import new_queue_id
from mq_transaction.queuefile import Envelope, encode
from mq_transaction.states import STATE_DIRS, MessageState

MQ_QUEUE = [sys.executable, "-m", "mq_transaction.cli_queue"]
GNU_TIME = "/usr/bin/time"
MESSAGE = (
    b"From: app@example.com\r\nTo: someone@example.org\r\nSubject: Your order has shipped\r\n"
    b"Message-ID: <bench@example.com>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n" + b"Hello.\r\n" * 100
)


def envelope(state: MessageState, queued_at: float, next_attempt: float) -> Envelope:
    """The envelope mq-send leaves on a message in ``state`` (one attempt for deferred and failed)."""
    record: dict = {
        "sender": "app@example.com",
        "recipients": [{"address": "someone@example.org", "status": "pending", "reply": None}],
        "queued_at": iso_utc(queued_at),
        "message_id": "<bench@example.com>",
        "attempts": [],
        "failure_reason": None,
        "next_attempt": None,
    }
    if state != MessageState.QUEUED:
        deferred = state == MessageState.DEFERRED
        reply = "451 4.3.0 try again later" if deferred else "550 5.1.1 no such user"
        record["recipients"][0].update(status="deferred" if deferred else "failed", reply=reply)
        attempt = {"number": 1, "at": iso_utc(queued_at + 1), "server": "127.0.0.1:25"}
        attempt.update(recipients={"someone@example.org": reply}, result=str(state))
        if deferred:
            attempt["next_attempt"] = record["next_attempt"] = iso_utc(next_attempt)
        else:
            record["failure_reason"] = "rejected"
        record["attempts"] = [attempt]
    return Envelope.from_json(json.dumps(record).encode())


def fill(path: str, count: int) -> dict[MessageState, int]:
    """Write ``count`` queue files straight into the state directories (no fsync)."""
    for directory in ("tmp", *STATE_DIRS.values()):
        os.makedirs(os.path.join(path, directory), exist_ok=True)
    made = dict.fromkeys((MessageState.DEFERRED, MessageState.QUEUED, MessageState.FAILED), 0)
    start = time.time() - count * 0.001 - 3600
    later = time.time() + 86400
    for n in range(count):
        queued_at = start + n * 0.001
        state = (MessageState.QUEUED, MessageState.FAILED)[n % 20 // 10] if n % 10 == 0 else MessageState.DEFERRED
        name = os.path.join(path, STATE_DIRS[state], new_queue_id(queued_at))
        with open(name, "wb") as handle:
            handle.write(encode(envelope(state, queued_at, later), MESSAGE))
        if state == MessageState.DEFERRED:
            os.utime(name, (later, later))
        made[state] += 1
    return made


def run(queue_dir: str, *args: str, first: bytes | None = None) -> tuple[float | None, float, int | None]:
    """Run mq-queue; return (seconds to the first line holding ``first``, seconds to the end, peak KB)."""
    report = tempfile.NamedTemporaryFile(prefix="mq-bench-time-", delete=False)
    report.close()
    command = [*MQ_QUEUE, "--queue-dir", queue_dir, *args]
    if os.path.exists(GNU_TIME):
        command = [GNU_TIME, "-o", report.name, "-f", "%M", *command]
    started = time.perf_counter()
    first_at = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as child:
        assert child.stdout is not None
        lines = 0
        for line in child.stdout:
            lines += 1
            if first_at is None and (first is None or first in line):
                first_at = time.perf_counter() - started
        status = child.wait()
    ended = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"mq-queue {' '.join(args)} exited {status}")
    if lines == 0:
        raise SystemExit(f"mq-queue {' '.join(args)} printed nothing")
    try:
        with open(report.name) as handle:
            peak = int(handle.read().split()[-1])
    except (OSError, ValueError, IndexError):
        peak = None
    os.unlink(report.name)
    return first_at, ended, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--keep", metavar="DIR", help="use (and keep) this queue directory; filled when empty")
    args = parser.parse_args()
    queue_dir = args.keep or tempfile.mkdtemp(prefix="mq-bench-scale-")
    try:
        if not os.path.isdir(os.path.join(queue_dir, "new")) or not any(
            os.scandir(os.path.join(queue_dir, "deferred"))
        ):
            started = time.time()
            made = fill(queue_dir, args.messages)
            print(f"queue of {sum(made.values())} messages ({', '.join(f'{s} {n}' for s, n in made.items())})")
            print(f"  written in {time.time() - started:.1f} s (not timed below)")
        print(f"load average {os.getloadavg()[0]:.2f} (2 cores: anything else running shows in the figures)")
        print()
        print(f"{'command':<22}{'first message s':>16}{'total s':>10}{'peak MB':>10}")
        rows = [
            (("list", "--json"), b'"id"'),
            (("list",), None),
            (("status",), None),
            (("status", "--json"), None),
        ]
        for command, first in rows:
            first_at, total, peak = run(queue_dir, *command, first=first)
            shown_first = f"{first_at:.2f}" if command[0] == "list" and first_at is not None else "-"
            shown_peak = f"{peak / 1024:.0f}" if peak is not None else "?"
            print(f"{' '.join(command):<22}{shown_first:>16}{total:>10.2f}{shown_peak:>10}")
        print()
        print("targets (100,000 messages): list's first message < 1 s, memory flat; status < 2 s")
    finally:
        if not args.keep:
            shutil.rmtree(queue_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
