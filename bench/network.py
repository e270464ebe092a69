"""Network benchmark: how fast ``mq-send`` drains a queue into a relay 20 ms away (round trip).

Queues N small messages (``--count 200``, ``--recipients 3`` each, one committed
transaction each; the setup is not timed), then drains them through a proxy that delays
every byte by ``--delay`` (10 ms) each way (``bench/_delay_proxy.py``) in front of Postfix's
``smtp-sink``, with, in the same run:

* ours: the real ``mq-send`` command, default settings (so ``mq.smtp_connections``'s
  default number of sessions, opened as the backlog needs them, and PIPELINING);
* zope.sendmail 7.3's ``zope-sendmail`` (one pass): a new connection per message;
* a plain smtplib client over one reused connection (``bench/_reference_client.py``:
  ``sendmail()`` per message, unlink and fsync).

At this distance the rate is set by round trips, not by the disk. With PIPELINING a
message alone costs 2 round trips (MAIL, RCPT... and DATA in one group; the body and its
reply), so ``sessions / (2 x round trip)`` is the limit the issue set for a pipelining
sender (smtp-sink offers no CHUNKING). Targets with default settings: ours >= 10 x
zope-sendmail and ours >= 0.8 x that limit. ``mq-send`` sends each body's final dot with
the next message's group (RFC 2920 3.1), one round trip a message in a backlog: its own
ceiling, ``sessions / round trip``, is printed too. Each drain is checked as in ``bench/drain.py`` (every
message arrived, queue empty, exit status 0); drains run ``--runs`` times, interleaved,
the median run is shown and each ratio is the median of per-run ratios.

    .venv/bin/python bench/network.py [--count 200] [--recipients 3] [--runs 3] [--delay 0.010]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from _delay_proxy import DelayProxy  # noqa: E402
from _sink import start_sink  # noqa: E402
from drain import Drain, Kind, drain, make_kinds, make_messages, median_run  # noqa: E402

from mq_transaction.settings import Settings  # noqa: E402

ZOPE_TARGET = 10.0
LIMIT_TARGET = 0.8


def benchmark(args: argparse.Namespace) -> int:
    messages = make_messages(args.count, args.recipients)
    kinds: dict[str, Kind] = make_kinds(1)  # ours (default settings), zope, reference
    names = {"ours": "ours (mq-send)", "zope": "zope-sendmail 7.3", "reference": "plain smtplib"}
    order = tuple(kinds)
    sessions = Settings().smtp_connections
    round_trip = 2 * args.delay
    limit = sessions / (2 * round_trip)
    scratch = tempfile.mkdtemp(prefix="mq-network-", dir=args.dir)
    sink = proxy = None
    try:
        sink = start_sink(args.sink, os.path.join(scratch, "sink-counters"))
        proxy = DelayProxy(sink.port, args.delay)
        extensions = sink.extensions()

        class Relay:  # the sink as the senders see it: through the proxy
            port = proxy.port

            @staticmethod
            def settled_counts(timeout: float = 3.0) -> tuple[int, int]:
                return sink.settled_counts(timeout)

        print(f"filling {args.runs} x {len(order)} queues of {args.count} messages (not timed)...", flush=True)
        directories = {}
        for run in range(args.runs):
            for key in order:
                directories[key, run] = os.path.join(scratch, f"{key}-{run}")
                kinds[key].fill(directories[key, run], messages)
        runs: dict[str, list[Drain]] = {key: [] for key in order}
        for run in range(args.runs):
            for key in order if run % 2 == 0 else reversed(order):
                os.sync()
                time.sleep(0.2)
                result = drain(kinds[key], directories[key, run], Relay, args.count, scratch)  # type: ignore[arg-type]
                runs[key].append(result)
                print(
                    f"  run {run + 1} {names[key]:18} {result.rate:7.1f} msg/s, "
                    f"{result.sessions} connections, {result.received} received",
                    flush=True,
                )
        print()
        print(
            f"{args.count} messages, {args.recipients} recipients each, through a proxy adding "
            f"{args.delay * 1000:.0f} ms each way (round trip {round_trip * 1000:.0f} ms) in front of {sink.name}"
        )
        print(f"sink offers: {' '.join(extensions)}; {args.runs} runs, median run shown")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print()
        print(f"{'':18} {'msg/s':>7}  {'each run (msg/s)':<24} {'connections':>11} {'round trips/msg':>15}")
        for key in order:
            result = median_run(runs[key])
            each = " ".join(f"{r.rate:.1f}" for r in runs[key])
            used = sessions if key == "ours" else 1
            trips = used / (result.rate * round_trip)
            print(f"{names[key]:18} {result.rate:7.1f}  {each:<24} {result.sessions:11d} {trips:15.1f}")
        print()
        failed = False
        each = [a.rate / b.rate for a, b in zip(runs["ours"], runs["zope"], strict=True)]
        verdict = "met" if statistics.median(each) >= ZOPE_TARGET else "MISSED"
        print(f"{'ours / zope-sendmail':34} {statistics.median(each):6.2f}  (target >= {ZOPE_TARGET:.0f}: {verdict})")
        each = [a.rate / b.rate for a, b in zip(runs["ours"], runs["reference"], strict=True)]
        print(f"{'ours / plain smtplib':34} {statistics.median(each):6.2f}  (for information)")
        ours = statistics.median(r.rate for r in runs["ours"])
        verdict = "met" if ours / limit >= LIMIT_TARGET else "MISSED"
        print(
            f"{f'ours / ({sessions} sessions / (2 x RTT))':34} {ours / limit:6.2f}  "
            f"(limit {limit:.0f} msg/s; target >= {LIMIT_TARGET}: {verdict})"
        )
        print(
            f"{f'ours / ({sessions} sessions / RTT)':34} {ours / (2 * limit):6.2f}  "
            f"(one round trip a message: {2 * limit:.0f} msg/s; for information)"
        )
        print()
        for key in order:
            for number, result in enumerate(runs[key], 1):
                for problem in result.problems():
                    failed = True
                    print(f"CHECK FAILED: {names[key]}, run {number}: {problem}")
        if not failed:
            print(
                f"checked: every drain exited 0, the sink received all {args.count} messages, every queue was emptied"
            )
        return 1 if failed else 0
    finally:
        if proxy is not None:
            proxy.stop()
        if sink is not None:
            sink.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="messages per drain (default 200)")
    parser.add_argument("--recipients", type=int, default=3, help="recipients per message (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="drains of each sender (default 3)")
    parser.add_argument("--delay", type=float, default=0.010, help="seconds added each way (default 0.010)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to make the scratch directory")
    parser.add_argument(
        "--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto", help="SMTP sink (default auto)"
    )
    return benchmark(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
