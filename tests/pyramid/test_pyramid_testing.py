"""``mq_pyramid.testing``: an outbox that holds only what committed, validated like the queue."""

from __future__ import annotations

import email.message

import pytest
import transaction
from pyramid.config import Configurator
from pyramid.response import Response
from pyramid_mailer.message import Message
from webtest import TestApp

from mq_pyramid.testing import MemoryMailer, OutboxMessage, get_outbox
from mq_transaction import InvalidAddressError, NoRecipientsError, NoTransactionError, QueuedMailer
from mq_transaction.interfaces import IMailer

FIXED = (
    b"Message-ID: <fixed@example.com>\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
    b"From: Shop <shop@example.com>\r\nTo: ann@example.org\r\nBcc: audit@example.com\r\n"
    b"Subject: Receipt\r\n\r\nThanks\r\n"
)


@pytest.fixture
def queue_backend(directory_backend):
    """Directory only: the testing mailer keeps no queue; the tests here that also queue for real
    compare it with the directory queue, and the database queue's own mailer is the same QueuedMailer."""
    return directory_backend


@pytest.fixture
def app(make_app, setup):
    """An app on the testing mailer alone (no mq.queue_dir), under each transaction owner."""
    return make_app(setup, settings={"mq.queue_dir": None}, includes=("mq_pyramid.testing",))


def subjects(outbox: list[OutboxMessage]) -> list[str]:
    return [message.email["Subject"] for message in outbox]


def test_outbox_holds_a_committed_message_with_its_envelope_and_bytes(app):
    app.http.get("/ok")
    [sent] = get_outbox(app.registry)
    assert sent.sender == "app@example.com"
    assert sent.recipients == ("ann@example.org",)
    assert sent.message.endswith(b"Subject: /ok\r\n\r\nHello\r\n")
    assert sent.message.startswith(b"Message-ID: " + sent.message_id.encode())


def test_outbox_is_empty_after_an_aborted_request(app):
    with pytest.raises(RuntimeError):
        app.http.get("/raise")
    app.http.get("/status/500", status=500)
    app.http.get("/xtm/abort")
    app.http.get("/doom")
    with pytest.raises(RuntimeError):
        app.http.get("/several", params={"fail": "1"})
    assert get_outbox(app.registry) == []


def test_outbox_keeps_commit_order_and_skips_aborted_requests(app):
    app.http.get("/several", params={"n": "2"})
    app.http.get("/status/404", status=404)
    app.http.get("/redirect-raised", status=302)
    assert subjects(get_outbox(app.registry)) == ["/several #0", "/several #1", "/redirect-raised"]


def test_enqueue_reaches_the_outbox_even_when_the_request_aborts(app):
    with pytest.raises(RuntimeError):
        app.http.get("/enqueue-then-raise")
    assert subjects(get_outbox(app.registry)) == ["/enqueue-then-raise enqueued"]


def test_get_outbox_accepts_request_registry_router_and_configurator(make_app):
    app = make_app("own", settings={"mq.queue_dir": None}, includes=("mq_pyramid.testing",))
    outbox = get_outbox(app.registry)
    assert get_outbox(app.http.app) is outbox
    assert get_outbox(type("Request", (), {"registry": app.registry})()) is outbox


def test_get_outbox_without_the_testing_include_says_what_to_do(make_app):
    app = make_app("own")
    with pytest.raises(LookupError, match="mq_pyramid.testing"):
        get_outbox(app.registry)


def test_testing_include_after_mq_pyramid_replaces_the_real_mailer(make_app):
    app = make_app("tm", includes=("mq_pyramid", "mq_pyramid.testing"))
    app.http.get("/ok")
    assert subjects(get_outbox(app.registry)) == ["/ok"]
    assert app.subjects() == []  # nothing reached the real queue


def test_testing_mailer_uses_mq_default_sender(make_app):
    app = make_app(
        "own",
        settings={"mq.queue_dir": None, "mq.default_sender": "Shop <bounces@shop.example>"},
        includes=("mq_pyramid.testing",),
    )
    app.http.get("/ok")
    assert get_outbox(app.registry)[0].sender == "bounces@shop.example"


@pytest.mark.parametrize(
    "message, kwargs, error",
    [
        (b"From: a@example.com\r\nSubject: nobody\r\n\r\n", {}, NoRecipientsError),
        (b"From: a@example.com\r\nTo: Doe, John <john@example.com>\r\n\r\n", {}, InvalidAddressError),
        (b"From: a@example.com\r\n\r\n", {"recipients": ["b@example.com\r\nRCPT TO:<x@evil>"]}, InvalidAddressError),
        (b"To: b@example.com\r\n\r\n", {"sender": "not an address"}, InvalidAddressError),
        (12345, {}, TypeError),
    ],
)
def test_testing_mailer_rejects_exactly_what_the_queue_rejects(tmp_path, message, kwargs, error):
    real = QueuedMailer(tmp_path / "queue")
    memory = MemoryMailer()
    for mailer in (real, memory):
        with pytest.raises(error) as raised, transaction.manager:
            mailer.send(message, **kwargs)
        if not isinstance(raised.value, TypeError):
            assert str(raised.value) == str(pytest.raises(error, real.prepare, message, **kwargs).value)
    assert memory.outbox == []


def test_outbox_bytes_equal_what_the_queue_stores(tmp_path):
    real = QueuedMailer(tmp_path / "queue")
    memory = MemoryMailer()
    pyramid_message = Message(subject="Hello", sender="shop@example.com", recipients=["ann@example.org"], body="Hi Ann")
    native = email.message.EmailMessage()
    native["From"] = "shop@example.com"
    native["To"] = "bob@example.org"
    native["Message-ID"] = "<native@example.com>"
    native["Date"] = "Sat, 28 Nov 2026 12:00:00 +0000"
    native.set_content("Hi Bob")
    for message in (FIXED, native):
        with transaction.manager:
            real.send(message)
            memory.send(message)
    with transaction.manager:
        memory.send(pyramid_message)
    stored = [real.queue.read(entry) for entry in real.queue.entries("queued")]
    assert [m.message for m in memory.outbox[:2]] == [message for _envelope, message in stored]
    assert [(m.sender, m.recipients, m.message_id) for m in memory.outbox[:2]] == [
        (e.sender, tuple(r.address for r in e.recipients), e.message_id) for e, _m in stored
    ]
    assert memory.outbox[0].recipients == ("ann@example.org", "audit@example.com")
    assert b"Bcc:" not in memory.outbox[0].message  # as the queue stores it: Bcc removed
    assert memory.outbox[2].sender == "shop@example.com"
    assert memory.outbox[2].recipients == ("ann@example.org",)


def test_savepoint_rollback_removes_later_messages_only():
    memory = MemoryMailer(transaction_manager=transaction.TransactionManager(explicit=True))
    manager = memory.transaction_manager
    with manager:
        memory.send(FIXED.replace(b"Receipt", b"kept"))
        savepoint = manager.savepoint()
        memory.send(FIXED.replace(b"Receipt", b"dropped"))
        savepoint.rollback()
    assert subjects(memory.outbox) == ["kept"]


def test_send_with_an_explicit_manager_and_no_transaction_raises():
    memory = MemoryMailer(transaction_manager=transaction.TransactionManager(explicit=True))
    with pytest.raises(NoTransactionError):
        memory.send(FIXED)
    assert memory.outbox == []


def test_outbox_can_be_cleared_between_requests(app):
    app.http.get("/ok")
    get_outbox(app.registry).clear()
    app.http.get("/redirect-returned", status=302)
    assert subjects(get_outbox(app.registry)) == ["/redirect-returned"]


def test_a_webtest_test_as_docs_pyramid_md_shows_it():
    """The five-minute test: include the testing mailer, drive the app, read the outbox."""

    def signup(request):
        request.mailer.send(
            Message(subject="Welcome", sender="hi@shop.example", recipients=[request.params["email"]], body="Hi")
        )
        return Response("ok")

    with Configurator(settings={}) as config:
        config.include("mq_pyramid.testing")
        config.add_route("signup", "/signup")
        config.add_view(signup, route_name="signup", request_method="POST")
    app = TestApp(config.make_wsgi_app())
    app.post("/signup", {"email": "ann@example.org"})
    [welcome] = get_outbox(app.app)
    assert welcome.recipients == ("ann@example.org",)
    assert welcome.email["Subject"] == "Welcome"
    assert isinstance(config.registry.getUtility(IMailer), MemoryMailer)


def test_testing_mailer_keeps_mail_sent_after_rolling_back_to_an_older_savepoint():
    """A rollback to a savepoint older than the mailer's join unjoins it; later mail still counts."""
    import transaction as transaction_package

    from mq_pyramid.testing import MemoryMailer

    manager = transaction_package.TransactionManager(explicit=True)
    mailer = MemoryMailer(transaction_manager=manager)
    txn = manager.begin()
    savepoint = txn.savepoint()
    mailer.send(b"From: a@example.com\nTo: b@example.org\n\nrolled back\n")
    savepoint.rollback()
    mailer.send(b"From: a@example.com\nTo: b@example.org\n\nkept\n")
    manager.commit()
    assert [m.message.endswith(b"kept\n") for m in mailer.outbox] == [True]


def test_the_testing_mailer_is_a_queued_mailer_over_a_memory_queue():
    from zope.interface.verify import verifyObject

    from mq_transaction.interfaces import IMailQueue
    from mq_transaction.memory_queue import MemoryQueue

    mailer = MemoryMailer()
    assert isinstance(mailer, QueuedMailer) and isinstance(mailer.queue, MemoryQueue)
    assert verifyObject(IMailer, mailer) and verifyObject(IMailQueue, mailer.queue)
