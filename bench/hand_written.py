"""The measured reasons for the hand-written parts, against what the standard library offers.

* the envelope JSON writer (``Envelope.to_json``) against ``json.dumps`` and a reused
  ``json.JSONEncoder`` on the same dict, and the share of it in a ``send()`` and commit;
* the address fast path (``addresses._plain_addresses``) against the ``email.utils`` path;
* the inotify wake-up (``watcher.DirectoryWatcher``) against polling at the daemon's
  1 s ``poll_interval``.

Times are CPU time (``time.process_time``), best of several repeats, so that other
processes on a shared machine move them less; the wake-up latencies are wall-clock medians.
The figures are quoted in the comments beside each part.

    .venv/bin/python bench/hand_written.py
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import timeit

import transaction

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mq_transaction import MessageQueue, QueuedMailer, addresses  # noqa: E402
from mq_transaction.durations import iso_utc  # noqa: E402
from mq_transaction.queuefile import Envelope  # noqa: E402
from mq_transaction.watcher import DirectoryWatcher  # noqa: E402


def cpu_us(function, number: int, repeat: int = 15) -> float:
    """Best CPU time of one call, in microseconds."""
    return min(timeit.repeat(function, number=number, repeat=repeat, timer=time.process_time)) / number * 1e6


def as_dict(envelope: Envelope) -> dict:
    return {
        "sender": envelope.sender,
        "recipients": [{"address": r.address, "status": r.status, "reply": r.reply} for r in envelope.recipients],
        "queued_at": iso_utc(envelope.queued_at),
        "message_id": envelope.message_id,
        "attempts": envelope.attempts,
        "failure_reason": envelope.failure_reason,
        "next_attempt": None if envelope.next_attempt is None else iso_utc(envelope.next_attempt),
    }


def envelope_writer() -> None:
    print("envelope JSON writer (us per envelope, CPU):")
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    for count in (1, 3, 100):
        envelope = Envelope.new(
            "noreply@example.com", [f"user{i}@example.org" for i in range(count)], 1795878999.5, "<1.2.abc@example.com>"
        )
        dumped = json.dumps(as_dict(envelope), ensure_ascii=False, separators=(",", ":")).encode()
        assert envelope.to_json() == dumped
        number = 20_000 if count < 100 else 2_000
        hand = cpu_us(envelope.to_json, number)
        reused = cpu_us(lambda envelope=envelope: encoder.encode(as_dict(envelope)).encode(), number)
        dumps = cpu_us(
            lambda envelope=envelope: json.dumps(as_dict(envelope), ensure_ascii=False, separators=(",", ":")).encode(),
            number,
        )
        figures = f"hand-written {hand:6.2f}, encoder reused {reused:6.2f}, json.dumps {dumps:6.2f}"
        print(f"  {count:3d} recipients: {figures}")

    directory = tempfile.mkdtemp(prefix="mq-bench-")
    mailer = QueuedMailer(MessageQueue(os.path.join(directory, "q"), fsync=False), default_sender="app@example.com")
    message = (
        b"From: app@example.com\r\nTo: alice@example.com, Bob <bob@example.net>, carol@example.org\r\n"
        b"Subject: hi\r\nMessage-ID: <x@y>\r\n\r\n" + b"x" * 2000
    )

    def sends(count: int) -> float:
        start = time.process_time()
        for _ in range(count):
            with transaction.manager:
                mailer.send(message)
        return (time.process_time() - start) / count * 1e6

    hand_written = Envelope.to_json
    library = {"hand-written": hand_written, "json encoder": lambda self: encoder.encode(as_dict(self)).encode()}
    sends(500)  # warm up
    runs: dict[str, list[float]] = {name: [] for name in library}
    for run in range(10):
        for name in sorted(library, reverse=bool(run % 2)):
            Envelope.to_json = library[name]
            runs[name].append(sends(2000))
    Envelope.to_json = hand_written
    figures = ", ".join(f"{name} {statistics.median(times):.0f} us" for name, times in runs.items())
    print(f"  send() + commit, fsync off, 3 recipients (median of 10 runs of 2,000): {figures}")


def address_fast_path() -> None:
    print("address headers (us per addresses_from_headers call, CPU):")
    fast = addresses._plain_addresses
    for label, value in (
        ("a@b", "alice@example.com"),
        ("Name <a@b>", "Alice Example <alice@example.com>"),
        ("three mixed", "alice@example.com, Bob Builder <bob@example.net>, carol@example.org"),
    ):
        times = {}
        for mode in ("fast path", "email.utils"):
            addresses._plain_addresses = fast if mode == "fast path" else (lambda value: None)
            times[mode] = cpu_us(lambda value=value: addresses.addresses_from_headers([value], "To"), 5000, 9)
        addresses._plain_addresses = fast
        print(f"  {label:12s}: fast path {times['fast path']:6.2f}, email.utils {times['email.utils']:6.2f}")


def wake_latency(watcher: DirectoryWatcher, new: str, tmp: str, count: int, spread: float) -> list[float]:
    """Milliseconds from a rename into ``new`` to the watcher's wait() returning."""
    latencies = []
    for number in range(count):
        source, target = os.path.join(tmp, f"m{number}"), os.path.join(new, f"m{number}")
        open(source, "w").close()
        renamed_at: list[float] = []

        def rename(source: str = source, target: str = target, renamed_at: list[float] = renamed_at) -> None:
            time.sleep(random.uniform(0, spread))
            renamed_at.append(time.perf_counter())
            os.rename(source, target)

        thread = threading.Thread(target=rename)
        thread.start()
        while True:
            watcher.wait(5.0)
            woke = time.perf_counter()
            if renamed_at and os.path.exists(target):
                break
        thread.join()
        latencies.append((woke - renamed_at[0]) * 1e3)
        os.unlink(target)
    return latencies


def inotify_wakeup() -> None:
    print("daemon wake-up after a rename into new/ (wall clock):")
    directory = tempfile.mkdtemp(prefix="mq-bench-")
    new, tmp = os.path.join(directory, "new"), os.path.join(directory, "tmp")
    os.mkdir(new)
    os.mkdir(tmp)
    wake_read, _wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    watcher = DirectoryWatcher(new, wake_read, 1.0)
    assert watcher.mode == "inotify"
    latencies = sorted(wake_latency(watcher, new, tmp, 200, 0.05))
    watcher.close()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"  inotify: median {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms")
    watcher = DirectoryWatcher(new, wake_read, 1.0)
    watcher.close()  # no inotify descriptor: it wakes every poll_interval, as where inotify is missing
    latencies = wake_latency(watcher, new, tmp, 20, 1.0)
    print(f"  polling every 1 s: median {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms")


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    envelope_writer()
    address_fast_path()
    inotify_wakeup()


if __name__ == "__main__":
    main()
