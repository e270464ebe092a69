"""Choosing the database queue: mq.queue_url, --queue-url, init-db, and the start-up checks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa

from mq_transaction import ConfigurationError, DatabaseQueue
from mq_transaction.cli_queue import main as mq_queue
from mq_transaction.cli_send import main as mq_send
from mq_transaction.settings import parse_settings

PASSWORD = "s3cret-pw"


def with_password(url: str) -> str:
    """The same database, with a password in the URL (trust authentication ignores it)."""
    return sa.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


# -- the settings ----------------------------------------------------------------------------------


def test_queue_url_replaces_queue_dir():
    settings = parse_settings({"mq.queue_url": "postgresql://mail@db/app", "mq.claim_timeout": "2m"})
    assert settings.queue_url == "postgresql://mail@db/app"
    assert settings.queue_dir is None
    assert settings.claim_timeout == 120


def test_both_queue_dir_and_queue_url_is_an_error_naming_both():
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.queue_dir": "/q", "mq.queue_url": "postgresql://db/app"})
    assert caught.value.key == "mq.queue_url"
    assert "mq.queue_dir" in str(caught.value)


def test_neither_queue_dir_nor_queue_url_is_an_error_naming_both():
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({})
    assert "mq.queue_dir" in str(caught.value) and "mq.queue_url" in str(caught.value)


def test_a_queue_url_that_is_not_postgresql_is_refused_without_echoing_it():
    with pytest.raises(ConfigurationError) as caught:
        parse_settings({"mq.queue_url": f"mysql://mail:{PASSWORD}@db/app"})
    assert caught.value.key == "mq.queue_url"
    assert PASSWORD not in str(caught.value)


def test_the_queue_url_stays_out_of_the_settings_repr():
    settings = parse_settings({"mq.queue_url": f"postgresql://mail:{PASSWORD}@db/app"})
    assert PASSWORD not in repr(settings)


def test_queue_session_needs_queue_url():
    with pytest.raises(ConfigurationError, match="mq.queue_session: needs mq.queue_url"):
        parse_settings({"mq.queue_dir": "/q", "mq.queue_session": "dbsession"})


def test_a_claim_timeout_too_short_to_renew_is_refused():
    with pytest.raises(ConfigurationError, match="mq.claim_timeout"):
        parse_settings({"mq.queue_url": "postgresql://db/app", "mq.claim_timeout": "1s"})


# -- mq-queue init-db ----------------------------------------------------------------------------------


def test_init_db_sql_prints_the_ddl_without_a_database(capsys):
    assert mq_queue(["init-db", "--sql"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE mq_messages" in out and "message BYTEA NOT NULL" in out
    assert "INSERT INTO mq_schema (version) VALUES (1);" in out


def test_init_db_creates_the_tables_once_and_masks_the_password(postgres_url, capsys):
    url = with_password(postgres_url)
    assert mq_queue(["--queue-url", url, "init-db"]) == 0
    assert mq_queue(["--queue-url", url, "init-db"]) == 0
    out = capsys.readouterr().out
    assert out.count("created") == 1 and out.count("already there") == 1
    assert PASSWORD not in out and "***" in out
    DatabaseQueue(postgres_url).check_schema()


def test_init_db_reads_the_url_from_the_config_file(postgres_url, tmp_path, capsys):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[app:main]\nuse = egg:mq_transaction\nmq.queue_url = {postgres_url}\n")
    assert mq_queue([str(ini), "init-db"]) == 0
    assert "created" in capsys.readouterr().out


def test_init_db_without_a_database_queue_is_a_usage_error(tmp_path, capsys):
    assert mq_queue(["--queue-dir", str(tmp_path), "init-db"]) == 2
    assert "mq.queue_url" in capsys.readouterr().err


# -- start-up checks ----------------------------------------------------------------------------------


def test_mq_send_refuses_a_database_without_tables_saying_to_run_init_db(postgres_url, capsys):
    assert mq_send(["--queue-url", with_password(postgres_url), "-q"]) == 2
    err = capsys.readouterr().err
    assert "init-db" in err
    assert PASSWORD not in err and "***" in err


def test_mq_queue_refuses_a_database_without_tables(postgres_url, capsys):
    assert mq_queue(["--queue-url", postgres_url, "status"]) == 2
    assert "init-db" in capsys.readouterr().err


def test_mq_send_exits_75_when_the_database_cannot_be_reached(capsys):
    assert mq_send(["--queue-url", f"postgresql://mail:{PASSWORD}@127.0.0.1:1/app", "-q"]) == 75
    err = capsys.readouterr().err
    assert "127.0.0.1:1" in err and PASSWORD not in err


def test_help_of_both_commands_names_the_queue_url_flag():
    for command in ("mq-send", "mq-queue"):
        module = "cli_send" if command == "mq-send" else "cli_queue"
        result = subprocess.run(
            [sys.executable, "-m", f"mq_transaction.{module}", "--help"], capture_output=True, text=True, check=True
        )
        assert "--queue-url URL" in result.stdout
