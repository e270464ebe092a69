"""The example sign-up app (examples/signup_app) behaves as ``make demo`` tells it.

Directory queue only: the example app as ``make demo`` runs it, on a queue directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pyramid.config import Configurator
from webtest import TestApp

from mq_pyramid.testing import get_outbox
from mq_transaction import MessageQueue
from mq_transaction.config import read_config_uri
from mq_transaction.settings import parse_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def signup_app():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import signup_app

        yield signup_app
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.fixture
def real(signup_app, tmp_path):
    app = signup_app.main({}, **{"mq.queue_dir": str(tmp_path / "queue")})
    return TestApp(app), MessageQueue(tmp_path / "queue")


def queued_recipients(queue: MessageQueue) -> list[list[str]]:
    return [[r.address for r in queue.read(entry)[0].recipients] for entry in queue.entries("queued")]


def test_sign_up_redirects_and_queues_the_welcome_mail(real):
    http, queue = real
    response = http.post("/signup", {"name": "Ann", "email": "ann@example.org"}, status=303)
    assert response.location.endswith("/welcome?email=ann%40example.org")
    assert queued_recipients(queue) == [["ann@example.org"]]


def test_sign_up_that_crashes_after_sending_queues_nothing(real):
    http, queue = real
    response = http.post("/signup-and-crash", {"name": "Bob", "email": "bob@example.org"}, status=500)
    assert "no mail was sent" in response.text
    assert queued_recipients(queue) == []


@pytest.mark.parametrize("email", ["eve@@example.org", "eve@example.org\r\nBcc: all@example.org", "Doe, J <j@x.org>"])
def test_sign_up_with_an_address_that_cannot_receive_mail_is_refused(real, email):
    http, queue = real
    response = http.post("/signup", {"name": "Eve", "email": email}, status=400)
    assert "cannot receive mail" in response.text
    assert queued_recipients(queue) == []


def test_the_welcome_mail_in_the_testing_outbox(signup_app):
    """The example's views under the testing mailer, as docs/pyramid.md's test does it."""
    with Configurator(settings={}) as config:
        config.include("mq_pyramid.testing")
        config.include(signup_app)
    http = TestApp(config.make_wsgi_app())
    http.post("/signup", {"name": "Ann", "email": "ann@example.org"}, status=303)
    http.post("/signup-and-crash", {"name": "Bob", "email": "bob@example.org"}, status=500)
    [welcome] = get_outbox(http.app)
    assert welcome.recipients == ("ann@example.org",)
    assert welcome.sender == "noreply@signup.example"  # from the From header: no mq.default_sender here
    assert welcome.email["Subject"] == "Welcome, Ann"


def test_demo_ini_settings_are_valid_for_the_app_and_the_sender():
    raw = read_config_uri(str(EXAMPLES / "demo.ini"))  # as mq-send reads it
    settings = parse_settings(raw)
    assert Path(settings.queue_dir).resolve() == EXAMPLES.parent / "demo-run" / "queue"
    assert settings.default_sender == "noreply@signup.example"
    assert settings.effective_tls == "none"


@pytest.mark.slow
def test_make_demo_tells_the_whole_story_with_a_clean_output():
    """``make demo``'s script end to end; it once printed a waitress traceback at shut-down."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")], capture_output=True, text=True, timeout=300, cwd=EXAMPLES.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[FAILED]" not in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "Bad file descriptor" not in result.stdout + result.stderr
    assert "the crashed request's mail never left" in result.stdout
