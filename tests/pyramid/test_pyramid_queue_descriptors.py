"""A web app holds one open queue for its lifetime: requests open no descriptor of their
own, and workers forked after the app was built (gunicorn's pre-fork) queue mail through it."""

from __future__ import annotations

import gc
import os


def open_descriptors() -> int:
    gc.collect()  # queues earlier tests dropped in reference cycles close now, not amid a count
    return len(os.listdir("/proc/self/fd"))


def test_requests_leave_no_descriptor_open(make_app):
    app = make_app("tm")
    app.http.get("/ok")
    before = open_descriptors()
    for _ in range(50):
        app.http.get("/ok")
        app.http.get("/several", params={"n": "3"})
    assert open_descriptors() == before
    assert len(app.subjects()) == 1 + 50 * 4


def test_workers_forked_after_the_app_was_built_queue_their_mail(make_app):
    app = make_app("tm")
    workers = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:  # a worker: its requests must commit through the queue the master opened
            try:
                for _ in range(10):
                    app.http.get("/ok")
                os._exit(0)
            except BaseException:
                os._exit(1)
        workers.append(pid)
    for _ in range(10):
        app.http.get("/ok")
    assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in workers] == [0, 0, 0]
    assert app.subjects() == ["/ok"] * 40
    assert app.uncommitted() == []
