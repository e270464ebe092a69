"""Durations and the ``mq.*`` settings: parsed once, typed, and errors name the key."""

from __future__ import annotations

import math
import pathlib

import pytest

from mq_transaction import ConfigurationError, MailQueueError
from mq_transaction.durations import format_duration, iso_utc, parse_duration, parse_iso_utc
from mq_transaction.settings import Settings, is_loopback, parse_settings

# -- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172800),
        ("0", 0),
        ("1.5h", 5400),
        (" 10 m ", 600),
        ("5M", 300),
        (45, 45),
        (2.5, 2.5),
    ],
)
def test_durations_are_plain_seconds_or_a_number_with_a_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "s", "abc", "5x", "-5", "-5m", "1h30m", "5.", ".5m", "5 minutes", "1w", -1, True, math.nan, math.inf]
)
def test_bad_durations_raise_value_error_naming_the_value(bad):
    with pytest.raises(ValueError) as caught:
        parse_duration(bad)
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (45, "45s"), (300, "5m"), (7200, "2h"), (172800, "2d")])
def test_format_duration_is_short_and_human(seconds, text):
    assert format_duration(seconds) == text


def test_iso_utc_times_end_in_z_and_read_back_exactly():
    text = iso_utc(1795878696.123456)
    assert text == "2026-11-28T15:11:36.123456Z"
    assert parse_iso_utc(text) == pytest.approx(1795878696.123456, abs=1e-6)


# -- settings -------------------------------------------------------------------------


def test_defaults_are_durable_private_and_36_hours_of_tmp():
    settings = parse_settings({"mq.queue_dir": "/var/spool/app-mail"})
    assert settings.queue_dir == "/var/spool/app-mail"
    assert settings.fsync is True
    assert settings.group_access is False
    assert settings.tmp_max_age == 36 * 3600
    assert settings.default_sender is None


def test_ini_strings_are_parsed_into_typed_values():
    settings = parse_settings(
        {
            "mq.queue_dir": " /q ",
            "mq.fsync": "false",
            "mq.group_access": "yes",
            "mq.tmp_max_age": "2d",
            "mq.default_sender": "App <app@example.com>",
            "mq.smtp_port": "2525",
            "mq.smtp_tls": "STARTTLS",
            "mq.smtp_connections": "4",
            "mq.min_backoff": "5m",
            "mq.max_backoff": "1h",
            "mq.smtp_username": "",
        }
    )
    assert settings.queue_dir == "/q"
    assert settings.fsync is False
    assert settings.group_access is True
    assert settings.tmp_max_age == 172800
    assert settings.default_sender == "app@example.com"
    assert settings.smtp_port == 2525
    assert settings.smtp_tls == "starttls"
    assert settings.smtp_connections == 4
    assert (settings.min_backoff, settings.max_backoff) == (300, 3600)
    assert settings.smtp_username is None


def test_python_values_are_accepted_too():
    settings = parse_settings({"mq.queue_dir": pathlib.Path("/q"), "mq.fsync": False, "mq.smtp_timeout": 10})
    assert settings.queue_dir == "/q"
    assert settings.fsync is False
    assert settings.smtp_timeout == 10


def test_keys_without_the_mq_prefix_are_ignored_and_none_means_default():
    settings = parse_settings({"mq.queue_dir": "/q", "pyramid.reload_templates": "true", "mq.fsync": None})
    assert settings.fsync is True


def test_an_unknown_mq_key_is_a_configuration_error_naming_the_key():
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.queue_dir": "/q", "mq.fsynk": "false"})
    assert caught.value.key == "mq.fsynk"
    assert "mq.fsynk" in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, MailQueueError)


def test_a_missing_queue_dir_is_a_configuration_error_naming_the_key():
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.fsync": "true"})
    assert caught.value.key == "mq.queue_dir"
    with pytest.raises(ConfigurationError):
        parse_settings({"mq.queue_dir": "  "})
    assert parse_settings({}, require_queue_dir=False).queue_dir is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mq.fsync", "maybe"),
        ("mq.group_access", "2"),
        ("mq.tmp_max_age", "soon"),
        ("mq.tmp_max_age", "-1h"),
        ("mq.smtp_port", "smtp"),
        ("mq.smtp_port", "70000"),
        ("mq.smtp_port", "0"),
        ("mq.smtp_tls", "maybe"),
        ("mq.smtp_tls", True),
        ("mq.smtp_connections", "0"),
        ("mq.max_per_connection", "1.5"),
        ("mq.default_sender", "not an address"),
        ("mq.default_sender", "app@example.com\r\nBcc: evil@example.com"),
        ("mq.delivery_log_format", "xml"),
        ("mq.smtp_host", 25),
        ("mq.queue_dir", ["/q"]),
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_the_key(key, value):
    raw = {"mq.queue_dir": "/q", key: value}
    with pytest.raises(ConfigurationError) as caught:
        parse_settings(raw)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


def test_min_backoff_above_max_backoff_is_a_configuration_error():
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.queue_dir": "/q", "mq.min_backoff": "2h", "mq.max_backoff": "1h"})
    assert caught.value.key == "mq.min_backoff"


def test_password_and_password_file_together_are_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.queue_dir": "/q", "mq.smtp_password": "x", "mq.smtp_password_file": "/p"})
    assert caught.value.key == "mq.smtp_password_file"


def test_password_file_is_read_without_its_newline_and_never_shown_in_repr(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    settings = parse_settings({"mq.queue_dir": "/q", "mq.smtp_password_file": str(secret)})
    assert settings.read_password() == "s3cret"
    inline = parse_settings({"mq.queue_dir": "/q", "mq.smtp_password": "hunter2"})
    assert "hunter2" not in repr(inline)
    missing = parse_settings({"mq.queue_dir": "/q", "mq.smtp_password_file": str(tmp_path / "nope")})
    with pytest.raises(ConfigurationError, match="mq.smtp_password_file"):
        missing.read_password()


def test_settings_are_frozen():
    settings = parse_settings({"mq.queue_dir": "/q"})
    with pytest.raises(AttributeError):
        settings.fsync = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("host", "tls", "port", "effective"),
    [
        ("localhost", None, None, ("none", 25)),
        ("127.0.0.1", None, None, ("none", 25)),
        ("[::1]", None, None, ("none", 25)),
        ("smtp.example.com", None, None, ("starttls", 25)),
        ("smtp.example.com", "ssl", None, ("ssl", 465)),
        ("smtp.example.com", "ssl", 2465, ("ssl", 2465)),
    ],
)
def test_tls_and_port_default_from_the_host(host, tls, port, effective):
    settings = Settings(queue_dir="/q", smtp_host=host, smtp_tls=tls, smtp_port=port)
    assert (settings.effective_tls, settings.effective_port) == effective


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "mail.localhost", "127.0.0.2", "::1"])
def test_loopback_hosts_are_recognised(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["smtp.example.com", "10.0.0.1", "localhost.example.com"])
def test_other_hosts_are_not_loopback(host):
    assert not is_loopback(host)


def test_tmp_max_age_below_an_hour_is_refused_to_protect_running_transactions():
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.queue_dir": "/q", "mq.tmp_max_age": "10m"})
    assert caught.value.key == "mq.tmp_max_age"


# -- one vocabulary: booleans, names, dotted names ----------------------------------------


@pytest.mark.parametrize("word", ["true", "Yes", "on", "1", "y", "T", " TRUE "])
def test_booleans_read_true_as_paste_deploy_and_pyramid_do(word):
    from paste.deploy.converters import asbool
    from pyramid.settings import asbool as pyramid_asbool

    settings = parse_settings({"mq.queue_dir": "/q", "mq.group_access": word, "mq.fsync": "n"})
    assert settings.group_access is True and asbool(word) is True and pyramid_asbool(word) is True
    assert settings.fsync is False


def test_a_word_that_is_no_boolean_is_an_error_not_false():
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.queue_dir": "/q", "mq.fsync": "sometimes"})
    assert caught.value.key == "mq.fsync"
    assert "'sometimes' is not a boolean" in caught.value.problem


def test_every_setting_name_is_defined_once_with_its_parser():
    from dataclasses import fields

    from mq_transaction.settings import KEYS, key

    assert list(KEYS) == [f.name for f in fields(Settings)]
    assert key("smtp_host") == "mq.smtp_host"
    with pytest.raises(KeyError):
        key("smtp_hots")


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("mq.smtp_hots", "mq.smtp_host"), ("mq.smtp_prot", "mq.smtp_port"), ("mq.queuedir", "mq.queue_dir")],
)
def test_an_unknown_key_names_the_closest_known_key(typo, meant):
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.queue_dir": "/q", typo: "x"})
    assert caught.value.key == typo
    assert f"did you mean {meant}?" in str(caught.value)


def test_an_unknown_key_like_no_known_key_points_at_the_reference():
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.queue_dir": "/q", "mq.zzzzzz": "x"})
    assert "did you mean" not in str(caught.value)
    assert "configuration reference" in str(caught.value)


def test_one_resolver_reads_both_dotted_name_forms_and_names_the_key():
    from mq_transaction.settings import resolve_callable

    assert resolve_callable("mq.on_failed", "os.path:join") is __import__("os").path.join
    assert resolve_callable("mq.on_failed", "os.path.join") is __import__("os").path.join
    with pytest.raises(ConfigurationError) as caught:
        resolve_callable("mq.commit_veto", "os.path:sep")
    assert caught.value.key == "mq.commit_veto" and "not callable" in caught.value.problem
    with pytest.raises(ConfigurationError, match="mq.on_failed: cannot import 'no_such_module.x'"):
        resolve_callable("mq.on_failed", "no_such_module.x")
