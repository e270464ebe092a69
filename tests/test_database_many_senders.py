"""Many senders on one database queue, killed at random: nothing lost, few duplicates.

Four ``mq-send`` processes (each in a UTS namespace of its own with its own host name, when
the tests run as root) drain 2,000 messages into a real SMTP server while a driver
SIGKILLs one of them at random, ten times, and starts another in its place. A killed
sender's claim runs out (``mq.claim_timeout = 2s``) and another sender delivers the
message. At the end every message arrived, the table is empty, and a message arrived twice
at most once per kill (the one in flight when its sender died).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from postgres_server import count_messages

from mq_transaction import DatabaseQueue
from mq_transaction.queuefile import Envelope

pytestmark = pytest.mark.slow

MESSAGES, SENDERS, KILLS = 2000, 4, 10


def lease_owners(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        owners = connection.execute(sa.text("select distinct lease_owner from mq_messages")).scalars().all()
    engine.dispose()
    return {owner.split(":")[0] for owner in owners if owner}


def sender_command(ini: str, host: str) -> list[str]:
    command = [sys.executable, "-m", "mq_transaction.cli_send", ini, "-q"]
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("hostname"):
        # A host name of its own: the lease records it, as it would on another machine.
        return ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *command]
    return command


def test_four_senders_killed_ten_times_lose_nothing(postgres_url, smtp_sink, tmp_path):
    queue = DatabaseQueue(postgres_url)
    queue.init_db()
    for number in range(MESSAGES):
        message = f"From: app@example.com\r\nTo: ann@example.org\r\nSubject: message {number}\r\n\r\nHi.\r\n"
        queue.enqueue(Envelope.new("app@example.com", ["ann@example.org"], time.time(), ""), message.encode())
    queue.dispose()
    ini = tmp_path / "senders.ini"
    ini.write_text(
        "[app:main]\nuse = egg:mq_transaction\n"
        f"mq.queue_url = {postgres_url}\nmq.claim_timeout = 2s\n"
        f"mq.smtp_host = 127.0.0.1\nmq.smtp_port = {smtp_sink.port}\n"
    )
    chooser = random.Random(9)
    hosts = [f"sender{number}" for number in range(SENDERS)]
    running: dict[str, subprocess.Popen] = {}
    seen_hosts: set[str] = set()
    kills = 0
    # kills 0.05-0.2 s apart: all ten land within the drain, which a faster sender shortens
    next_kill = time.monotonic() + chooser.uniform(0.05, 0.2)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            left = count_messages(postgres_url)
            seen_hosts |= lease_owners(postgres_url)
            for host in hosts:
                process = running.get(host)
                if process is not None and process.poll() is not None:
                    assert process.returncode in (0, 75), f"{host} exited {process.returncode}"
                    del running[host]
                if host not in running and left:
                    running[host] = subprocess.Popen(sender_command(str(ini), host), stderr=subprocess.DEVNULL)
            if not left and not running:
                break
            if kills < KILLS and time.monotonic() >= next_kill and running:
                victim = chooser.choice(sorted(running))
                running[victim].send_signal(signal.SIGKILL)
                running.pop(victim).wait()
                kills += 1
                next_kill = time.monotonic() + chooser.uniform(0.05, 0.2)
            time.sleep(0.05)
    finally:
        for process in running.values():
            process.kill()
            process.wait()
    assert kills == KILLS
    assert count_messages(postgres_url) == 0
    subjects = [r.content.split(b"Subject: ")[1].split(b"\r\n")[0] for r in smtp_sink.received]
    assert set(subjects) == {f"message {n}".encode() for n in range(MESSAGES)}
    assert len(subjects) - MESSAGES <= KILLS
    if os.geteuid() == 0 and shutil.which("unshare"):
        assert len(seen_hosts & set(hosts)) >= 2, seen_hosts
