"""``make demo``: the whole story, on this machine, over real sockets.

1. start an SMTP sink (aiosmtpd) on 127.0.0.1;
2. serve the example sign-up app (examples/demo.ini) with waitress on 127.0.0.1, in its own process;
3. drive requests through it over HTTP: a sign-up that commits, one that crashes after
   sending its mail, one with an address that cannot receive mail;
4. run ``mq-send examples/demo.ini`` as a separate process;
5. print what the sink received, the delivery log and the SMTP dialog, and check that
   the crashed request's mail never left.

Everything it starts, it stops. Exit status 0 only when every step happened as told.
Files go to demo-run/ at the top of the repository (removed at the start of each run).
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
RUN = ROOT / "demo-run"
INI = EXAMPLES / "demo.ini"

# Run from a checkout without installing anything but the dependencies: the example app
# (``use = call:signup_app:main``) and the project itself come from this tree.
for path in (str(EXAMPLES), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

from aiosmtpd.controller import Controller  # noqa: E402
from pyramid.paster import get_appsettings, setup_logging  # noqa: E402

from mq_transaction import MessageQueue  # noqa: E402

COMMITTED = ("Ann", "ann@example.org")
CRASHED = ("Bob", "bob@example.org")
INVALID = ("Eve", "eve@@example.org")


class Sink:
    """An SMTP server that accepts everything and keeps what it received."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Message accepted"


class Story:
    """Prints each step and remembers every check that failed."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def step(self, text: str) -> None:
        print(f"\n== {text}", flush=True)

    def say(self, text: str = "") -> None:
        print(f"   {text}" if text else "", flush=True)

    def check(self, ok: bool, text: str) -> bool:
        print(f"   [{'ok' if ok else 'FAILED'}] {text}", flush=True)
        if not ok:
            self.failures.append(text)
        return ok


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(port: int, path: str, fields: dict[str, str]) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            path,
            body=urllib.parse.urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location", "")
    finally:
        connection.close()


def get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def mq_send_command() -> list[str]:
    """``mq-send`` from this virtual environment; its module when the project is not installed."""
    script = Path(sys.executable).parent / "mq-send"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mq_transaction.cli_send"]


def queued(queue: MessageQueue) -> list[tuple[str, str, list[str], str]]:
    """(state, queue id, recipients, subject) of every message in the queue."""
    found = []
    for entry in queue.entries():
        envelope, message = queue.read(entry)
        subject = message_from_bytes(message, policy=default_policy)["Subject"]
        found.append((entry.state, entry.queue_id, [r.address for r in envelope.recipients], str(subject)))
    return found


def drive(story: Story, port: int) -> None:
    status, body = get(port, "/")
    story.check(status == 200 and "<form" in body, f"GET  /                  -> {status} (the sign-up form)")

    name, email = COMMITTED
    status, location = post(port, "/signup", {"name": name, "email": email})
    story.check(status == 303 and "/welcome" in location, f"POST /signup  {email:<17} -> {status} {location}")
    status, body = get(port, urllib.parse.urlsplit(location).path + "?" + urllib.parse.urlsplit(location).query)
    story.check(status == 200 and email in body, f"GET  /welcome           -> {status}")

    name, email = CRASHED
    status, _ = post(port, "/signup-and-crash", {"name": name, "email": email})
    story.check(status == 500, f"POST /signup-and-crash {email} -> {status} (sent its mail, then raised)")

    name, email = INVALID
    status, _ = post(port, "/signup", {"name": name, "email": email})
    story.check(status == 400, f"POST /signup  {email:<17} -> {status} (refused before anything was queued)")


def run(story: Story) -> None:
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir()
    setup_logging(str(INI))

    story.step("1. SMTP sink")
    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    story.say(f"aiosmtpd listening on 127.0.0.1:{smtp_port}")
    try:
        story.step(f"2. the example app ({INI.relative_to(ROOT)}), served by waitress in its own process")
        queue_dir = get_appsettings(str(INI))["mq.queue_dir"]
        http_port = free_port()
        server = start_web_server(http_port)
        story.say(f"http://127.0.0.1:{http_port}/   queue: {os.path.relpath(queue_dir, ROOT)}")
        try:
            story.step("3. requests over HTTP")
            drive(story, http_port)
        finally:
            stop_web_server(server)
        deliver(story, MessageQueue(queue_dir), smtp_port, sink)
    finally:
        controller.stop()
        story.step("stopped the web server and the SMTP sink")


#: The web server process: the example app from the ini file, served by waitress, as pserve would.
SERVE = (
    "import sys; from pyramid.paster import get_app, setup_logging; from waitress import serve; "
    "setup_logging(sys.argv[1]); serve(get_app(sys.argv[1]), listen=sys.argv[2])"
)


def start_web_server(port: int) -> subprocess.Popen:
    """Serve the example app on 127.0.0.1:``port`` in its own process; return once it answers.

    A separate process, like a real deployment, and one that stops cleanly: waitress has no
    way to stop a server running in a thread of this process without racing its own loop.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(INI), f"127.0.0.1:{port}"], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the web server exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the web server did not answer on 127.0.0.1:{port} within 30 s")


def stop_web_server(process: subprocess.Popen) -> None:
    """SIGTERM the web server process and wait for it to end."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def deliver(story: Story, queue: MessageQueue, smtp_port: int, sink: Sink) -> None:
    story.step("4. the queue before delivery")
    before = queued(queue)
    for state, queue_id, recipients, subject in before:
        story.say(f"{state:<8} {queue_id}  to {', '.join(recipients)}  {subject!r}")
    story.check(
        [(state, recipients) for state, _id, recipients, _subject in before] == [("queued", [COMMITTED[1]])],
        "exactly one message waits: the committed sign-up's welcome mail",
    )

    story.step("5. mq-send")
    delivery_log = RUN / "delivery.log"
    smtp_log = RUN / "smtp.log"
    command = [
        *mq_send_command(),
        str(INI),
        "--smtp-port",
        str(smtp_port),
        "--delivery-log",
        str(delivery_log),
        "--smtp-log",
        str(smtp_log),
    ]
    story.say("$ " + " ".join(os.path.relpath(part, ROOT) if part.startswith(str(ROOT)) else part for part in command))
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    try:
        result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        story.check(False, f"mq-send ran: {exc}")
        return
    for line in (result.stdout + result.stderr).splitlines():
        story.say("| " + line)
    story.check(result.returncode == 0, f"mq-send exited with status {result.returncode} (0: all due mail delivered)")

    story.step("6. what the SMTP sink received")
    received = list(sink.received)
    for mail_from, rcpt_tos, content in received:
        message = message_from_bytes(content, policy=default_policy)
        story.say(f"MAIL FROM:<{mail_from}>  RCPT TO:{', '.join(f'<{r}>' for r in rcpt_tos)}")
        story.say(f"  From: {message['From']}  To: {message['To']}  Subject: {message['Subject']}")
        story.say(f"  Message-ID: {message['Message-ID']}")
    story.check(
        [rcpt for _from, rcpt, _content in received] == [[COMMITTED[1]]],
        f"the sink received exactly one message, for {COMMITTED[1]}",
    )

    story.step("7. the delivery log")
    show_file(story, delivery_log)
    story.step("8. the SMTP dialog (AUTH would be redacted)")
    show_file(story, smtp_log)

    story.step("9. the crashed request's mail never left")
    crashed_at_sink = [c for _f, rcpt, c in received if CRASHED[1] in rcpt or b"must never leave" in c]
    story.check(crashed_at_sink == [], f"nothing reached the sink for {CRASHED[1]} ('... must never leave')")
    story.check(queued(queue) == [], "the queue is empty: nothing waiting, deferred, failed or held")
    logged = delivery_log.read_text(encoding="utf-8") if delivery_log.exists() else ""
    story.check(CRASHED[1] not in logged, f"the delivery log never mentions {CRASHED[1]}")


def show_file(story: Story, path: Path) -> None:
    if not path.exists():
        story.check(False, f"{os.path.relpath(path, ROOT)} exists")
        return
    story.say(f"{os.path.relpath(path, ROOT)}:")
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        story.say("| " + line)


def main() -> int:
    story = Story()
    try:
        run(story)
    except Exception as exc:  # noqa: BLE001 - the demo reports any failure and exits 1
        story.check(False, f"the demo ran to the end ({type(exc).__name__}: {exc})")
    if story.failures:
        print(f"\nDEMO FAILED: {len(story.failures)} step(s) did not happen:", file=sys.stderr)
        for failure in story.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print("\nDEMO OK: the committed sign-up's mail was delivered; the crashed request's mail never left.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
