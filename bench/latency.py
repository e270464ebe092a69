"""Latency benchmark: how soon ``mq-send --daemon`` sends a message after its commit.

Starts an aiosmtpd sink on 127.0.0.1 that records the arrival time (``time.time()`` at
``handle_DATA``) of every Message-ID, and ``mq-send --daemon`` as a subprocess on a fresh
queue directory with the default settings (every write fsynced). Once the daemon logs
"daemon ready", it commits ``--messages`` messages one at a time at ``--rate`` per second,
each in its own ``transaction.manager`` transaction with its own Message-ID, records the
time each commit completed, waits for every message to arrive, and prints p50, p95 and
p99 of commit-to-received latency. Then it leaves the daemon idle for ``--idle-seconds``
and prints its CPU use (utime + stime from ``/proc/PID/stat``) over that wall time.

For comparison it runs the same load through zope.sendmail: QueuedMailDelivery (joined to
the thread-local ``transaction.manager``) into its own maildir, sent by
``zope-sendmail --daemon --interval 3`` (a subprocess, polling every 3 s). A warm-up message,
not counted, shows that its daemon is running before the load starts.

Targets (issue 5): p50 <= 50 ms, p99 <= 250 ms, idle CPU < 1 %.

    .venv/bin/python bench/latency.py [--messages 500] [--rate 20] [--idle-seconds 30]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import transaction
from aiosmtpd.controller import Controller

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mq_transaction import MessageQueue, QueuedMailer  # noqa: E402

SENDER = "app@example.com"
RECIPIENT = "user@example.org"
TARGET_P50_MS, TARGET_P99_MS, TARGET_IDLE_CPU_PERCENT = 50.0, 250.0, 1.0
MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


def free_port() -> int:
    """A TCP port nobody listens on right now (aiosmtpd 1.4 cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ArrivalHandler:
    """An aiosmtpd handler that records when each Message-ID arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: dict[str, float] = {}
        self.duplicates = 0
        self.sessions = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        arrived = time.time()
        content = envelope.original_content or envelope.content
        head = content.split(b"\r\n\r\n", 1)[0]
        match = MESSAGE_ID.search(head)
        if match:
            message_id = match.group(1).decode("ascii", "replace")
            with self.lock:
                if message_id in self.arrivals:
                    self.duplicates += 1
                else:
                    self.arrivals[message_id] = arrived
        return "250 2.0.0 Message accepted"

    def count(self, message_ids: list[str]) -> int:
        with self.lock:
            return sum(1 for message_id in message_ids if message_id in self.arrivals)


class Sink:
    """The SMTP sink: ``port``, ``handler`` and ``stop()`` (idempotent)."""

    def __init__(self) -> None:
        self.handler = ArrivalHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.controller.stop()


class Child:
    """A subprocess whose stderr is kept (timestamped) for readiness and diagnostics."""

    def __init__(self, name: str, argv: list[str], ready_marker: str | None = None) -> None:
        self.name = name
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.ready_marker = ready_marker
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(f"{time.time():.6f} {line.rstrip()}")
            if self.ready_marker and self.ready_marker in line:
                self.ready.set()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status {self.process.returncode}:\n{self.tail()}")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, count: int = 20) -> str:
        return "\n".join(self.lines[-count:]) or "(no output)"

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit status (idempotent)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for {timeout:.0f}s; killing it", file=sys.stderr)
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=2)
        if self.process.stderr:
            self.process.stderr.close()
        return self.process.returncode


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_message(tag: str, number: int) -> tuple[str, bytes]:
    """A small message with a Message-ID of its own; returns (Message-ID, bytes)."""
    message_id = f"<latency-{tag}-{number}@example.com>"
    message = (
        f"From: App <{SENDER}>\r\n"
        f"To: <{RECIPIENT}>\r\n"
        f"Subject: latency {tag} {number}\r\n"
        f"Message-ID: {message_id}\r\n"
        "Date: Sat, 28 Nov 2026 15:11:36 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Message {number} of the latency benchmark.\r\n"
    ).encode()
    return message_id, message


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def run_load(
    name: str,
    send: Callable[[bytes], None],
    sink: Sink,
    child: Child,
    messages: int,
    rate: float,
    timeout: float,
) -> dict[str, object]:
    """Commit ``messages`` at ``rate`` per second, wait for them; return the measurements."""
    items = [make_message(name, number) for number in range(messages)]
    ids = [message_id for message_id, _ in items]
    committed: dict[str, float] = {}
    commit_seconds: list[float] = []
    cpu_before = cpu_seconds(child.pid)
    start = time.monotonic()
    for number, (message_id, message) in enumerate(items):
        delay = start + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.perf_counter()
        with transaction.manager:
            send(message)
        commit_seconds.append(time.perf_counter() - began)
        committed[message_id] = time.time()
        if number % 50 == 0:
            child.check_alive()
    load_seconds = time.monotonic() - start
    deadline = time.monotonic() + timeout
    while sink.handler.count(ids) < messages and time.monotonic() < deadline:
        child.check_alive()
        time.sleep(0.05)
    cpu_used = cpu_seconds(child.pid) - cpu_before
    with sink.handler.lock:
        arrivals = dict(sink.handler.arrivals)
        duplicates = sink.handler.duplicates
    latencies = [(arrivals[message_id] - committed[message_id]) * 1000 for message_id in ids if message_id in arrivals]
    return {
        "latencies": latencies,
        "missing": messages - len(latencies),
        "duplicates": duplicates,
        "load_seconds": load_seconds,
        "send_ms_p50": percentile(commit_seconds, 0.5) * 1000,
        "send_ms_p99": percentile(commit_seconds, 0.99) * 1000,
        "cpu_ms_per_message": cpu_used * 1000 / messages,
        "sessions": sink.handler.sessions,
    }


def measure_idle_cpu(child: Child, seconds: float) -> float:
    """The child's CPU use in percent of one core over ``seconds`` of wall time."""
    wall_before, cpu_before = time.monotonic(), cpu_seconds(child.pid)
    time.sleep(seconds)
    child.check_alive()
    wall, cpu = time.monotonic() - wall_before, cpu_seconds(child.pid) - cpu_before
    return 100.0 * cpu / wall


def report(name: str, result: dict[str, object], targets: bool) -> bool:
    """Print one result; return True when it meets the targets (or none apply)."""
    latencies = result["latencies"]
    print(f"\n{name}")
    print(
        f"  sent {len(latencies)} in {result['load_seconds']:.1f}s, missing {result['missing']}, "
        f"duplicates {result['duplicates']}, SMTP sessions {result['sessions']}"
    )
    print(
        f"  commit (send + transaction) p50 {result['send_ms_p50']:.2f} ms, p99 {result['send_ms_p99']:.2f} ms; "
        f"daemon CPU {result['cpu_ms_per_message']:.2f} ms per message"
    )
    if not latencies:
        print("  no message arrived")
        return False
    p50, p95, p99 = (percentile(latencies, fraction) for fraction in (0.5, 0.95, 0.99))
    if not targets:
        print(f"  commit-to-received: p50 {p50:.1f} ms  p95 {p95:.1f} ms  p99 {p99:.1f} ms", end="")
        print(f"  max {max(latencies):.1f} ms")
        return True
    ok_p50, ok_p99 = p50 <= TARGET_P50_MS, p99 <= TARGET_P99_MS
    print(
        f"  commit-to-received: p50 {p50:.1f} ms ({'ok' if ok_p50 else 'MISSED'}, target <= {TARGET_P50_MS:.0f})  "
        f"p95 {p95:.1f} ms  p99 {p99:.1f} ms ({'ok' if ok_p99 else 'MISSED'}, target <= {TARGET_P99_MS:.0f})  "
        f"max {max(latencies):.1f} ms"
    )
    return ok_p50 and ok_p99 and result["missing"] == 0


def start_daemon(queue_dir: str, smtp_port: int) -> Child:
    """``mq-send --daemon`` on ``queue_dir``, sending to 127.0.0.1:``smtp_port``, as a child process."""
    argv = [sys.executable, "-m", "mq_transaction.cli_send", "--daemon", "--queue-dir", queue_dir]
    argv += ["--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_port)]
    return Child("mq-send --daemon", argv, ready_marker="daemon ready")


def bench_ours(args: argparse.Namespace, scratch: str, cleanup: list[Callable[[], object]]) -> bool:
    sink = Sink()
    cleanup.append(sink.stop)
    queue_dir = os.path.join(scratch, "mq-queue")
    queue = MessageQueue(queue_dir)  # the default: fully durable
    daemon = start_daemon(queue_dir, sink.port)
    cleanup.append(daemon.stop)
    daemon.wait_ready(timeout=30)
    mailer = QueuedMailer(queue)
    result = run_load("mq", mailer.send, sink, daemon, args.messages, args.rate, args.timeout)
    ok = report("mq-send --daemon (inotify, fsync on)", result, targets=True)
    if args.idle_seconds > 0:
        idle = measure_idle_cpu(daemon, args.idle_seconds)
        ok_idle = idle < TARGET_IDLE_CPU_PERCENT
        verdict = "ok" if ok_idle else "MISSED"
        print(
            f"  idle CPU over {args.idle_seconds:g}s: {idle:.3f} % of one core "
            f"({verdict}, target < {TARGET_IDLE_CPU_PERCENT:g} %)"
        )
        ok = ok and ok_idle
    status = daemon.stop()
    sink.stop()
    if status != 0:
        print(f"  mq-send --daemon exited with status {status} after SIGTERM:\n{daemon.tail()}")
        ok = False
    if args.show_log:
        print(daemon.tail(200))
    return ok


def bench_zope(args: argparse.Namespace, scratch: str, cleanup: list[Callable[[], object]]) -> None:
    from zope.sendmail.delivery import QueuedMailDelivery
    from zope.sendmail.maildir import Maildir

    sink = Sink()
    cleanup.append(sink.stop)
    maildir = os.path.join(scratch, "zope-maildir")
    Maildir(maildir, True)
    script = os.path.join(os.path.dirname(sys.executable), "zope-sendmail")
    argv = [script] if os.path.exists(script) else [sys.executable, "-m", "zope.sendmail.queue"]
    daemon = Child(
        "zope-sendmail --daemon",
        [
            *argv,
            "--daemon",
            "--interval",
            f"{args.zope_interval:g}",
            "--hostname",
            "127.0.0.1",
            "--port",
            str(sink.port),
            "--no-tls",
            maildir,
        ],
    )
    cleanup.append(daemon.stop)
    delivery = QueuedMailDelivery(maildir)

    def send(message: bytes) -> None:
        delivery.send(SENDER, [RECIPIENT], message)

    # zope-sendmail logs nothing when ready: a warm-up message shows that it polls.
    warm_id, warm_message = make_message("zope-warmup", 0)
    with transaction.manager:
        send(warm_message)
    deadline = time.monotonic() + 30 + 2 * args.zope_interval
    while sink.handler.count([warm_id]) == 0:
        daemon.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"zope-sendmail delivered nothing:\n{daemon.tail()}")
        time.sleep(0.05)
    with sink.handler.lock:
        sink.handler.sessions = 0
    result = run_load("zope", send, sink, daemon, args.messages, args.rate, args.timeout + 2 * args.zope_interval)
    report(f"zope.sendmail 7.3 (zope-sendmail --daemon --interval {args.zope_interval:g}, no fsync)", result, False)
    daemon.stop()
    sink.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="messages per run (default 500)")
    parser.add_argument("--rate", type=float, default=20.0, help="commits per second (default 20)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU measurement (default 30)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the last arrivals")
    parser.add_argument("--zope-interval", type=float, default=3.0, help="zope-sendmail --interval (default 3)")
    parser.add_argument("--no-zope", action="store_true", help="skip the zope.sendmail comparison")
    parser.add_argument("--show-log", action="store_true", help="print the daemon's timestamped stderr")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to make the scratch directory")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rate <= 0 or args.idle_seconds < 0:
        parser.error("--messages must be >= 1, --rate > 0, --idle-seconds >= 0")

    # SIGTERM to the benchmark unwinds like Ctrl-C, so the finally below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scratch = tempfile.mkdtemp(prefix="mq-latency-", dir=args.dir)
    cleanup: list[Callable[[], object]] = []
    print(
        f"{args.messages} messages, one transaction each, at {args.rate:g}/s; "
        f"sink aiosmtpd on 127.0.0.1; queues under {scratch}; {os.cpu_count()} CPUs"
    )
    try:
        ok = bench_ours(args, scratch, cleanup)
        if not args.no_zope:
            bench_zope(args, scratch, cleanup)
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:  # keep cleaning up
                print(f"cleanup: {exc!r}", file=sys.stderr)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
