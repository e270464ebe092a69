"""``config.include('mq_pyramid')`` checks every ``mq.*`` setting at configuration time.

Directory queue only: ``mq.queue_dir``'s checks (``mq.queue_url``'s are in
test_pyramid_database_queue.py and test_database_settings.py).
"""

from __future__ import annotations

import os

import pyramid.exceptions
import pytest
from pyramid.config import Configurator

import mq_pyramid
import mq_transaction
from mq_transaction.interfaces import IMailer


def include(settings, module="mq_pyramid"):
    with Configurator(settings=settings) as config:
        config.include(module)
    return config


def include_error(settings, module="mq_pyramid") -> mq_pyramid.ConfigurationError:
    with pytest.raises(pyramid.exceptions.ConfigurationError) as raised:
        include(settings, module)
    assert isinstance(raised.value, mq_transaction.ConfigurationError)  # the same error mq-send raises
    assert str(raised.value).startswith(raised.value.key)
    return raised.value


def test_missing_queue_dir_names_the_key():
    assert include_error({}).key == "mq.queue_dir"


def test_empty_queue_dir_names_the_key():
    assert include_error({"mq.queue_dir": " "}).key == "mq.queue_dir"


def test_unknown_mq_key_is_named(tmp_path):
    error = include_error({"mq.queue_dir": str(tmp_path), "mq.queue_path": "/var/spool"})
    assert error.key == "mq.queue_path"


@pytest.mark.parametrize(
    "key, value",
    [
        ("mq.fsync", "sometimes"),
        ("mq.default_sender", "not an address"),
        ("mq.default_sender", "a@example.com\r\nBcc: victim@example.org"),
        ("mq.smtp_port", "99999"),
        ("mq.tmp_max_age", "forever"),
        ("mq.group_access", "maybe"),
    ],
)
def test_bad_value_names_the_key(tmp_path, key, value):
    error = include_error({"mq.queue_dir": str(tmp_path / "q"), key: value})
    assert error.key == key
    assert not os.path.exists(tmp_path / "q")  # nothing created before the settings were valid


def test_queue_dir_that_cannot_be_created_names_the_key(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    error = include_error({"mq.queue_dir": str(blocker / "queue")})
    assert error.key == "mq.queue_dir"
    assert str(blocker / "queue") in str(error)


def test_queue_dir_that_is_a_file_names_the_key(tmp_path):
    (tmp_path / "queue").write_text("")
    assert include_error({"mq.queue_dir": str(tmp_path / "queue")}).key == "mq.queue_dir"


def test_queue_dir_that_cannot_be_written_names_the_key(tmp_path, monkeypatch):
    # root may write anywhere, so simulate the other user's directory at the access check
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if "queue" in str(path) else real_access(path, mode))
    error = include_error({"mq.queue_dir": str(tmp_path / "queue")})
    assert error.key == "mq.queue_dir"
    assert "not writable" in str(error)


def test_commit_veto_that_cannot_be_imported_names_the_key(tmp_path):
    error = include_error({"mq.queue_dir": str(tmp_path), "mq.commit_veto": "no_such_module.veto"})
    assert error.key == "mq.commit_veto"


def test_commit_veto_that_is_missing_in_its_module_names_the_key(tmp_path):
    error = include_error({"mq.queue_dir": str(tmp_path), "mq.commit_veto": "mq_pyramid.tween:no_such_veto"})
    assert error.key == "mq.commit_veto"


def test_commit_veto_that_is_not_callable_names_the_key(tmp_path):
    error = include_error({"mq.queue_dir": str(tmp_path), "mq.commit_veto": "mq_pyramid.tween.NAME"})
    assert error.key == "mq.commit_veto"
    assert "not callable" in str(error)


def test_testing_include_checks_settings_too_but_needs_no_queue_dir():
    assert include_error({"mq.fsync": "sometimes"}, "mq_pyramid.testing").key == "mq.fsync"
    include({}, "mq_pyramid.testing")


def test_valid_settings_create_the_queue_and_register_one_mailer(tmp_path):
    config = include(
        {
            "mq.queue_dir": str(tmp_path / "queue"),
            "mq.default_sender": "Shop <noreply@shop.example>",
            "mq.group_access": "true",
            "mq.fsync": "false",
            "mq.smtp_host": "smtp.example.com",  # the sender's settings live in the same section
            "mail.host": "ignored.example.com",  # other prefixes are not ours
        }
    )
    mailer = config.registry.getUtility(IMailer)
    assert isinstance(mailer, mq_transaction.QueuedMailer)
    assert mailer.default_sender == "noreply@shop.example"
    assert mailer.queue.path == str(tmp_path / "queue")
    assert mailer.queue.group_access is True and mailer.queue.fsync is False
    assert os.path.isdir(tmp_path / "queue" / "new")
    assert oct(os.stat(tmp_path / "queue").st_mode & 0o777) == "0o770"
