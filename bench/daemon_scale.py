"""The daemon beside a large backlog: commit-to-delivery with 100,000 deferred messages.

Builds a queue directory holding ``--messages`` deferred messages whose next attempt is a
day away (written with the queue's own file format straight into ``deferred/``, for speed),
starts ``mq-send --daemon`` on it with an aiosmtpd sink, then commits ``--probes`` new
messages one at a time and measures commit-to-delivery latency, p50 and max (target of
issue 12 item 15: within 50 ms whatever the number of deferred messages), and the daemon's
CPU use over that time. ``bench/queue_scale.py`` measures ``mq-queue`` on such a queue.

    .venv/bin/python bench/daemon_scale.py [--messages 100000] [--probes 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import transaction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from latency import Sink, cpu_seconds, make_message, percentile, start_daemon  # noqa: E402

from mq_transaction import MessageQueue, QueuedMailer, queuefile  # noqa: E402
from mq_transaction.queue import new_queue_id  # noqa: E402
from mq_transaction.queuefile import Envelope  # noqa: E402

TARGET_DELIVERY_MS = 50.0
MESSAGE = b"From: app@example.com\r\nTo: ann@example.org\r\nSubject: backlog\r\n\r\n" + b"x" * 1500 + b"\r\n"


def build_backlog(queue: MessageQueue, count: int) -> None:
    """``count`` deferred messages, due in a day, as a sender would have left them."""
    deferred = os.path.join(queue.path, "deferred")
    due = time.time() + 86400
    now = time.time()
    for number in range(count):
        envelope = Envelope.new("app@example.com", ("ann@example.org",), now, f"<backlog.{number}@example.com>")
        envelope.next_attempt = due
        path = os.path.join(deferred, new_queue_id(now))
        with open(path, "wb") as handle:
            handle.write(queuefile.encode(envelope, MESSAGE))
        os.utime(path, (due, due))


def measure_daemon(queue: MessageQueue, probes: int) -> tuple[list[float], float]:
    sink = Sink()
    daemon = start_daemon(queue.path, sink.port)
    try:
        daemon.wait_ready(timeout=300)
        mailer = QueuedMailer(queue)
        latencies = []
        time.sleep(1)
        cpu_before, wall_before = cpu_seconds(daemon.pid), time.monotonic()
        idle_cpu = 0.0
        for number in range(probes):
            message_id, message = make_message("scale", number)
            with transaction.manager:
                mailer.send(message)
            committed = time.time()
            deadline = time.monotonic() + 30
            while sink.handler.count([message_id]) < 1:
                daemon.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"message {number} not delivered in 30 s:\n{daemon.tail()}")
                time.sleep(0.001)
            with sink.handler.lock:
                latencies.append((sink.handler.arrivals[message_id] - committed) * 1000)
            time.sleep(0.2)
        wall = time.monotonic() - wall_before
        idle_cpu = 100.0 * (cpu_seconds(daemon.pid) - cpu_before) / wall
        return latencies, idle_cpu
    finally:
        daemon.stop()
        sink.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="mq-scale-")
    try:
        queue = MessageQueue(os.path.join(scratch, "queue"), fsync=False)
        began = time.perf_counter()
        build_backlog(queue, args.messages)
        print(f"built {args.messages} deferred messages in {time.perf_counter() - began:.1f}s ({scratch})")
        latencies, idle_cpu = measure_daemon(queue, args.probes)
        p50 = percentile(latencies, 0.5)
        print(
            f"mq-send --daemon beside {args.messages} deferred: commit-to-delivery p50 {p50:.1f} ms "
            f"({'ok' if p50 <= TARGET_DELIVERY_MS else 'MISSED'}, target <= {TARGET_DELIVERY_MS:g} ms), "
            f"max {max(latencies):.1f} ms over {len(latencies)} commits; "
            f"daemon CPU over the probes {idle_cpu:.2f} % of one core"
        )
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
