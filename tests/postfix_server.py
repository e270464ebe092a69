"""Debian's Postfix ``smtpd`` on a free 127.0.0.1 port, private to one test: a real server that offers CHUNKING.

Postfix's ``master`` runs in the foreground (``master -d``) from a configuration directory of
its own in a temporary directory, with three services: ``smtpd`` on the test's port,
``trivial-rewrite`` (which smtpd needs for addresses) and ``postlogd`` (its log, in the
temporary directory). smtpd hands each mail transaction to a before-queue proxy
(``smtpd_proxy_filter``), here an aiosmtpd :class:`smtp_sinks.Sink`: Postfix's own code
answers EHLO, MAIL, RCPT and BDAT on the wire, the proxy's replies to RCPT and to the end of
the message are relayed to the client, and the proxy records what arrived. No mail queue,
no delivery agents, nothing outside the temporary directory.

Needs the ``postfix`` package (``apt-get install postfix``; ``.ci/run`` installs it) and
root, since ``master`` runs only as root (it starts smtpd as the ``postfix`` user). Without
either the fixture fails with a message saying so: the test does not skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from smtp_sinks import free_port

POSTFIX_DAEMONS = "/usr/lib/postfix/sbin"


class PostfixSmtpd:
    """A running Postfix smtpd on ``port`` that hands mail to the SMTP proxy on ``proxy_port``.

    ``main_cf`` adds or overrides ``main.cf`` parameters (``smtpd_recipient_limit="2"``).
    """

    def __init__(self, proxy_port: int, **main_cf: str) -> None:
        master = os.path.join(POSTFIX_DAEMONS, "master")
        if not os.path.exists(master):
            raise RuntimeError(f"{master} is missing: install Debian's postfix package (apt-get install -y postfix)")
        if os.geteuid() != 0:
            raise RuntimeError("Postfix's master runs only as root: run this test as root (CI does)")
        owner = pwd.getpwnam("postfix")
        self.directory = tempfile.mkdtemp(prefix="mq-postfix-")
        os.chmod(self.directory, 0o755)
        queue = os.path.join(self.directory, "queue")
        for name, owned in (("queue", False), ("queue/pid", False), ("queue/private", True), ("queue/public", True)):
            path = os.path.join(self.directory, name)
            os.mkdir(path, 0o755)
            if owned:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        data = os.path.join(self.directory, "data")
        os.mkdir(data, 0o700)
        os.chown(data, owner.pw_uid, owner.pw_gid)
        self.maillog = os.path.join(self.directory, "maillog")
        self.port = free_port()
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": queue,
            "data_directory": data,
            "mail_owner": "postfix",
            "myhostname": "postfix.mq-test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_tls_security_level": "none",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_proxy_filter": f"127.0.0.1:{proxy_port}",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.directory,
            **main_cf,
        }
        with open(os.path.join(self.directory, "main.cf"), "w") as handle:
            handle.writelines(f"{key} = {value}\n" for key, value in settings.items())
        with open(os.path.join(self.directory, "master.cf"), "w") as handle:
            handle.write(
                f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
                "rewrite unix - - n - - trivial-rewrite\n"
                "postlog unix-dgram n - n - 1 postlogd\n"
            )
        self._stderr = open(os.path.join(self.directory, "master.err"), "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [master, "-c", self.directory, "-d"], stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return  # smtpd serves this probe and sees it go: harmless
            except OSError:
                time.sleep(0.1)
        log = self.log()
        self.stop()
        raise RuntimeError(f"Postfix did not listen on 127.0.0.1:{self.port} within {timeout:.0f}s:\n{log}")

    def log(self) -> str:
        """Postfix's own log (and master's stderr) so far, for a failing test's message."""
        text = []
        for name in ("maillog", "master.err"):
            try:
                with open(os.path.join(self.directory, name), errors="replace") as handle:
                    text.append(handle.read())
            except OSError:
                pass
        return "".join(text)

    def stop(self) -> None:
        """Stop master (it stops its children) and remove the directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()
        shutil.rmtree(self.directory, ignore_errors=True)
