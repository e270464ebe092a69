"""A small sign-up app: its welcome mail leaves only when the sign-up's request commits.

``main`` is the PasteDeploy app factory named by ``examples/demo.ini``
(``use = call:signup_app:main``, with ``examples/`` on the Python path).
"""

from __future__ import annotations

import html
import logging
from email.message import EmailMessage

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response

log = logging.getLogger(__name__)

FROM = "Signup Demo <noreply@signup.example>"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>
"""

FORM = """{error}
<form method="post" action="/signup">
  <label>Name <input name="name" value="{name}"></label>
  <label>Email <input name="email" value="{email}"></label>
  <button>Sign up</button>
</form>
<form method="post" action="/signup-and-crash">
  <input type="hidden" name="name" value="{name}"><input type="hidden" name="email" value="{email}">
  <button>Sign up, then crash (the welcome mail is rolled back)</button>
</form>
"""


def page(title: str, body: str, status: int = 200) -> Response:
    return Response(PAGE.format(title=html.escape(title), body=body), status=status, charset="utf-8")


def form_page(request, error: str = "", status: int = 200) -> Response:
    body = FORM.format(
        error=f'<p role="alert">{html.escape(error)}</p>' if error else "",
        name=html.escape(request.params.get("name", "")),
        email=html.escape(request.params.get("email", "")),
    )
    return page("Sign up", body, status)


def welcome_mail(name: str, email: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = FROM
    message["To"] = email
    message["Subject"] = subject
    message.set_content(f"Hello {name},\n\nwelcome aboard.\n")
    return message


def form_view(request):
    return form_page(request)


def signup_view(request):
    name = request.params.get("name", "").strip() or "friend"
    email = request.params.get("email", "").strip()
    try:
        # Queued in this request's transaction: it becomes deliverable when the request
        # commits (here, when the redirect below is returned).
        queue_id = request.mailer.send(welcome_mail(name, email, f"Welcome, {name}"))
    except ValueError as exc:
        # InvalidMessageError from the mailer (a malformed address), or the email
        # package refusing a CR/LF in a header: either way, nothing was queued.
        return form_page(request, f"That address cannot receive mail: {exc}", status=400)
    log.info("signed up %s; welcome mail is queue id %s", email, queue_id)
    return HTTPSeeOther(location=request.route_url("welcome", _query={"email": email}))


def signup_and_crash_view(request):
    name = request.params.get("name", "").strip() or "friend"
    email = request.params.get("email", "").strip()
    queue_id = request.mailer.send(welcome_mail(name, email, f"Welcome, {name} (this mail must never leave)"))
    log.info("sent queue id %s, now failing on purpose", queue_id)
    raise RuntimeError("the sign-up failed after its welcome mail was sent")


def welcome_view(request):
    email = html.escape(request.params.get("email", ""))
    return page("Welcome", f"<p>Check your inbox at {email}.</p>")


def error_view(exc, request):
    # The request failed: mq_pyramid aborts its transaction, and its mail with it.
    log.error("request %s failed: %s", request.path, exc)
    return page("Something went wrong", "<p>Nothing was saved and no mail was sent.</p>", status=500)


def includeme(config):
    """Routes and views; the mailer comes from ``mq_pyramid`` (or ``mq_pyramid.testing`` in tests)."""
    config.add_route("form", "/")
    config.add_route("signup", "/signup")
    config.add_route("signup_and_crash", "/signup-and-crash")
    config.add_route("welcome", "/welcome")
    config.add_view(form_view, route_name="form", request_method="GET")
    config.add_view(signup_view, route_name="signup", request_method="POST")
    config.add_view(signup_and_crash_view, route_name="signup_and_crash", request_method="POST")
    config.add_view(welcome_view, route_name="welcome", request_method="GET")
    config.add_view(error_view, context=Exception)


def main(global_config, **settings):
    """Build the WSGI app from the ``[app:main]`` settings (``mq.*`` among them)."""
    with Configurator(settings=settings) as config:
        config.include("mq_pyramid")
        config.include(includeme)
    return config.make_wsgi_app()
