"""A fast SMTP sink on 127.0.0.1 for bench/drain.py: Postfix's ``smtp-sink``, else aiosmtpd.

``smtp-sink`` takes thousands of messages per second on one core and throws them away;
aiosmtpd tops out near 600-850 messages per second here, too slow to measure a fast
sender. ``find_smtp_sink()`` looks for the binary on the PATH, then in a cache directory
(``$XDG_CACHE_HOME/mq-bench``, else ``/tmp/mq-bench-cache``); when it is in neither it
fetches Debian's ``postfix`` package with ``apt-get download`` and unpacks it there with
``dpkg -x`` (no mail server is installed or configured). Both sinks count sessions and
messages, so a drain can be checked: every message arrived, over how many connections.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import smtplib
import socket
import subprocess
import threading
import time
from dataclasses import dataclass


def free_port() -> int:
    """A TCP port nobody listens on right now (aiosmtpd 1.4 cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(base, "mq-bench") if base else "/tmp/mq-bench-cache"


@dataclass(frozen=True)
class SinkBinary:
    path: str
    library_dir: str | None  # Postfix's private shared libraries, when unpacked from the package


def find_smtp_sink(fetch: bool = True, say=print) -> SinkBinary | None:
    """Postfix's smtp-sink: installed, cached, or fetched into the cache; None if none can be had."""
    for candidate in (shutil.which("smtp-sink"), "/usr/sbin/smtp-sink"):
        if candidate and os.access(candidate, os.X_OK):
            return SinkBinary(candidate, None)
    root = os.path.join(cache_dir(), "postfix")
    binary = os.path.join(root, "usr", "sbin", "smtp-sink")
    if not os.access(binary, os.X_OK) and fetch:
        _fetch_postfix(root, say)
    if os.access(binary, os.X_OK):
        return SinkBinary(binary, os.path.join(root, "usr", "lib", "postfix"))
    return None


def _fetch_postfix(root: str, say) -> None:
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        return
    download = os.path.join(cache_dir(), "download")
    os.makedirs(download, exist_ok=True)
    say(f"fetching Debian's postfix package for smtp-sink into {cache_dir()} (unpacked, not installed)")
    try:
        # The sandbox user _apt cannot write to a directory of ours; this is a plain download.
        subprocess.run(
            ["apt-get", "download", "-o", "APT::Sandbox::User=root", "postfix"],
            cwd=download,
            check=True,
            capture_output=True,
            timeout=300,
        )
        packages = sorted(glob.glob(os.path.join(download, "postfix_*.deb")))
        if not packages:
            return
        subprocess.run(["dpkg", "-x", packages[-1], root], check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        say(f"could not fetch postfix: {exc}")


class Sink:
    """A running sink; ``counts()`` returns ``(sessions, messages)`` so far."""

    name = ""
    port = 0

    def counts(self) -> tuple[int, int]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def settled_counts(self, timeout: float = 3.0) -> tuple[int, int]:
        """The counts once they have stopped changing (a session is counted when it ends)."""
        deadline = time.monotonic() + timeout
        last = self.counts()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.counts()
            if now == last:
                return now
            last = now
        return last

    def extensions(self) -> list[str]:
        """The ESMTP extensions the sink offers (one EHLO; counted as a session)."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as probe:
            probe.ehlo()
            return sorted(name.upper() for name in probe.esmtp_features)


class PostfixSink(Sink):
    """``smtp-sink -c``: its running counters (``sess=N quit=N mesg=N``) go to a file we read."""

    _COUNTER = re.compile(rb"(\w+)=(\d+)")

    def __init__(self, binary: SinkBinary, counter_file: str) -> None:
        self.name = f"Postfix smtp-sink ({binary.path})"
        self.port = free_port()
        self.counter_file = counter_file
        env = dict(os.environ)
        if binary.library_dir:
            env["LD_LIBRARY_PATH"] = binary.library_dir
        command = [binary.path, "-c"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # it refuses to run as root
        command += [f"127.0.0.1:{self.port}", "256"]
        # Files, not pipes: nobody reads them while the sink runs, and a full pipe would block it.
        self._output = open(counter_file, "wb")
        self._errors = open(counter_file + ".err", "wb")
        self.process = subprocess.Popen(command, stdout=self._output, stderr=self._errors, env=env)
        _wait_listening(self.port, self.process, counter_file + ".err")

    def counts(self) -> tuple[int, int]:
        with open(self.counter_file, "rb") as handle:
            text = handle.read()
        last = text.rstrip(b"\r\n").rsplit(b"\r", 1)[-1]
        values = {k.decode(): int(v) for k, v in self._COUNTER.findall(last)}
        return values.get("sess", 0), values.get("mesg", 0)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._output.close()
        self._errors.close()


class AiosmtpdSink(Sink):
    """aiosmtpd in a thread of this process, offering PIPELINING like smtp-sink."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.name = "aiosmtpd (slow: caps near 600-850 msg/s)"
        self.port = free_port()
        self._lock = threading.Lock()
        self._sessions = 0
        self._messages = 0
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802 - aiosmtpd's name
        with self._lock:
            self._sessions += 1
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):  # noqa: N802 - aiosmtpd's name
        with self._lock:
            self._sessions += 1
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        with self._lock:
            self._messages += 1
        return "250 2.0.0 OK"

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self._sessions, self._messages

    def stop(self) -> None:
        self.controller.stop()


def start_sink(kind: str, counter_file: str, say=print) -> Sink:
    """``kind`` is ``auto`` (smtp-sink, else aiosmtpd with a warning), ``smtp-sink`` or ``aiosmtpd``."""
    if kind != "aiosmtpd":
        binary = find_smtp_sink(say=say)
        if binary is not None:
            try:
                return PostfixSink(binary, counter_file)
            except (OSError, RuntimeError) as exc:
                if kind == "smtp-sink":
                    raise
                say(f"WARNING: smtp-sink would not start: {exc}")
        elif kind == "smtp-sink":
            raise RuntimeError("smtp-sink not found and could not be fetched")
        say(
            "WARNING: Postfix's smtp-sink is not available; falling back to aiosmtpd, which caps near "
            "600-850 msg/s: the figures below measure the sink, not the senders"
        )
    return AiosmtpdSink()


def _wait_listening(port: int, process: subprocess.Popen, error_file: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(error_file, "rb") as handle:
                error = handle.read().decode(errors="replace").strip()
            raise RuntimeError(f"smtp-sink exited with status {process.returncode}: {error}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return  # this probe is one session in the counters; callers take differences
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise RuntimeError(f"smtp-sink did not listen on 127.0.0.1:{port} within {timeout:.0f}s")
