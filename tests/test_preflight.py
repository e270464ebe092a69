"""Start-up checks: a wrong path, mode, section, key or secret is exit status 2 naming it, at once.

Permissions are tested for real: the tests run as root, so the command under test runs as
the user ``nobody`` (``setpriv``), on directories made in a place that user can reach.

Directory queue only: modes and owners of the queue's directories (a database
queue's permissions are the database's, checked by ``check_writable``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pyramid.exceptions
import pytest
import transaction
from pyramid.config import Configurator
from smtp_sinks import RecordingHandler, Sink

import mq_transaction
from mq_transaction import MessageQueue, QueuedMailer
from mq_transaction.config import load_settings
from mq_transaction.settings import parse_settings

MQ_SEND = [sys.executable, "-m", "mq_transaction.cli_send"]
MQ_QUEUE = [sys.executable, "-m", "mq_transaction.cli_queue"]
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def run(command, *args, as_nobody=False):
    prefix = AS_NOBODY if as_nobody else []
    return subprocess.run([*prefix, *command, *map(str, args)], capture_output=True, text=True, timeout=60, cwd="/")


def assert_configuration_error(done, *needles):
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for needle in needles:
        assert str(needle) in done.stderr, f"{needle!r} not in {done.stderr!r}"


@pytest.fixture
def shared_dir():
    """A directory the user ``nobody`` can reach (pytest's tmp_path is private to root)."""
    path = tempfile.mkdtemp(prefix="mq-preflight-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def commit_one(queue_dir):
    mailer = QueuedMailer(MessageQueue(queue_dir, fsync=False))
    with transaction.manager:
        mailer.send(b"From: app@example.com\nTo: ann@example.org\nSubject: hi\n\nhello\n")


# -- permissions (issue 10 item 11) ---------------------------------------------------


@pytest.mark.slow
def test_mq_send_on_a_queue_it_cannot_read_names_path_owner_mode_user_and_what_to_do(shared_dir):
    queue_dir = os.path.join(shared_dir, "q")
    commit_one(queue_dir)  # created by root, 0700
    done = run(MQ_SEND, "--queue-dir", queue_dir, "--smtp-host", "127.0.0.1", "--smtp-port", "1", as_nobody=True)
    assert_configuration_error(
        done, "mq.queue_dir", queue_dir, "owned by root", "mode 0700", "nobody (uid 65534)", "mq.group_access"
    )
    assert "Run mq-send as root" in done.stderr


@pytest.mark.slow
def test_mq_send_names_the_state_directory_it_cannot_use(shared_dir):
    queue_dir = os.path.join(shared_dir, "q")
    commit_one(queue_dir)
    os.chmod(queue_dir, 0o755)  # the root is open, its state directories are not
    done = run(MQ_SEND, "--queue-dir", queue_dir, "--smtp-host", "127.0.0.1", "--smtp-port", "1", as_nobody=True)
    assert_configuration_error(done, "mq.queue_dir", f"{queue_dir}/", "mode 0700", "nobody")


@pytest.mark.slow
def test_mq_queue_on_a_queue_it_cannot_read_says_who_and_what_not_an_errno(shared_dir):
    queue_dir = os.path.join(shared_dir, "q")
    commit_one(queue_dir)
    os.chmod(queue_dir, 0o755)
    done = run(MQ_QUEUE, "--queue-dir", queue_dir, "list", as_nobody=True)
    assert_configuration_error(done, "mq.queue_dir", "owned by root", "mode 0700", "nobody (uid 65534)")
    assert "Errno" not in done.stderr


@pytest.mark.slow
def test_mq_queue_reading_commands_need_no_write_access(shared_dir):
    queue_dir = os.path.join(shared_dir, "q")
    commit_one(queue_dir)
    for directory in [queue_dir, *(os.path.join(queue_dir, name) for name in os.listdir(queue_dir))]:
        os.chmod(directory, 0o755)
    os.chmod(queue_dir, 0o755)
    for name in os.listdir(os.path.join(queue_dir, "new")):
        os.chmod(os.path.join(queue_dir, "new", name), 0o644)
    listed = run(MQ_QUEUE, "--queue-dir", queue_dir, "list", as_nobody=True)
    assert listed.returncode == 0, listed.stderr
    assert "ann@example.org" in listed.stdout
    held = run(MQ_QUEUE, "--queue-dir", queue_dir, "hold", listed.stdout.split()[0], as_nobody=True)
    assert_configuration_error(held, "mq.queue_dir", "cannot read and write", "nobody")


@pytest.mark.slow
def test_the_documented_group_setting_lets_a_second_user_send(shared_dir, smtp_sink):
    queue_dir = os.path.join(shared_dir, "q")
    queue = MessageQueue(queue_dir, group_access=True, fsync=False)
    for directory in [queue_dir, *(os.path.join(queue_dir, name) for name in os.listdir(queue_dir))]:
        shutil.chown(directory, group="nogroup")  # as docs/queue.md says: a shared group, set-group-ID
        os.chmod(directory, 0o2770)
    os.mkdir(os.path.join(queue_dir, "lost+found"), 0o700)  # a queue on its own file system: not a state
    mailer = QueuedMailer(queue)
    with transaction.manager:
        mailer.send(b"From: app@example.com\nTo: ann@example.org\nSubject: hi\n\nhello\n")
    ini = os.path.join(shared_dir, "app.ini")
    with open(ini, "w") as handle:
        handle.write(f"[app:main]\nmq.queue_dir = {queue_dir}\nmq.group_access = true\n")
    os.chmod(ini, 0o644)
    done = run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--init-groups"],  # nobody, in group nogroup
        *MQ_SEND,
        ini,
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        smtp_sink.port,
    )
    assert done.returncode == 0, done.stderr
    assert len(smtp_sink.received) == 1


def include_error(settings) -> mq_transaction.ConfigurationError:
    with pytest.raises(pyramid.exceptions.ConfigurationError) as raised:
        with Configurator(settings=settings) as config:
            config.include("mq_pyramid")
    assert isinstance(raised.value, mq_transaction.ConfigurationError)
    return raised.value


def test_config_include_creates_missing_parent_directories_of_the_queue(tmp_path):
    queue_dir = tmp_path / "var" / "spool" / "app-mail"
    with Configurator(settings={"mq.queue_dir": str(queue_dir)}) as config:
        config.include("mq_pyramid")
    assert os.path.isdir(queue_dir / "new")
    assert oct(os.stat(queue_dir).st_mode & 0o777) == oct(0o700)


@pytest.mark.slow
def test_config_include_as_another_user_names_owner_mode_and_user(shared_dir):
    queue_dir = os.path.join(shared_dir, "q")
    MessageQueue(queue_dir)  # created by root, 0700
    code = (
        "from pyramid.config import Configurator\n"
        "import pyramid.exceptions\n"
        "try:\n"
        f"    Configurator(settings={{'mq.queue_dir': {queue_dir!r}}}).include('mq_pyramid')\n"
        "except pyramid.exceptions.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = run([sys.executable, "-c", code], as_nobody=True)
    assert done.returncode == 0, done.stderr
    for needle in ("mq.queue_dir", queue_dir, "owned by root", "mode 0700", "nobody (uid 65534)", "group_access"):
        assert needle in done.stdout, (needle, done.stdout)


@pytest.mark.slow
def test_config_include_names_a_parent_it_cannot_create(shared_dir):
    locked = os.path.join(shared_dir, "locked")
    os.mkdir(locked, 0o755)
    code = (
        "from pyramid.config import Configurator\n"
        "import pyramid.exceptions\n"
        "try:\n"
        f"    Configurator(settings={{'mq.queue_dir': {locked + '/a/q'!r}}}).include('mq_pyramid')\n"
        "except pyramid.exceptions.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = run([sys.executable, "-c", code], as_nobody=True)
    assert f"mq.queue_dir: cannot create {locked}/a" in done.stdout, done.stdout + done.stderr
    assert "owned by root" in done.stdout and "nobody" in done.stdout


# -- file-valued settings (issue 10 item 5) ----------------------------------------------


@pytest.fixture
def queue_dir(tmp_path):
    path = tmp_path / "q"
    MessageQueue(path)
    return path


def mq_send_with(queue_dir, tmp_path, settings: dict, *flags, as_nobody=False):
    ini = tmp_path / "app.ini"
    lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
    ini.write_text(f"[app:main]\nmq.queue_dir = {queue_dir}\nmq.smtp_host = 127.0.0.1\nmq.smtp_port = 1\n{lines}")
    return run(MQ_SEND, ini, *flags, as_nobody=as_nobody)


@pytest.mark.slow
def test_a_missing_ca_file_is_a_configuration_error_not_an_outage(queue_dir, tmp_path):
    commit_one(queue_dir)
    done = mq_send_with(queue_dir, tmp_path, {"mq.smtp_ca_file": tmp_path / "nope.pem"})
    assert_configuration_error(done, "mq.smtp_ca_file", tmp_path / "nope.pem", "does not exist")


@pytest.mark.slow
def test_a_ca_file_that_holds_no_certificate_is_refused_at_start_up(queue_dir, tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("this is not a certificate\n")
    done = mq_send_with(queue_dir, tmp_path, {"mq.smtp_ca_file": bogus})
    assert_configuration_error(done, "mq.smtp_ca_file", bogus, "no CA certificate")


@pytest.mark.slow
def test_a_real_ca_file_passes(queue_dir, tmp_path):
    from smtp_sinks import make_certificate

    cert_file, _key_file = make_certificate(tmp_path)
    done = mq_send_with(queue_dir, tmp_path, {"mq.smtp_ca_file": cert_file})
    assert done.returncode == 0, done.stderr  # nothing queued: nothing to send


@pytest.mark.slow
def test_an_unreadable_ca_file_names_its_owner_mode_and_the_user(shared_dir):
    queue_dir = os.path.join(shared_dir, "q")
    os.mkdir(queue_dir, 0o777)
    MessageQueue(queue_dir)
    for name in os.listdir(queue_dir):
        os.chmod(os.path.join(queue_dir, name), 0o777)
    os.chmod(queue_dir, 0o777)
    ca_file = os.path.join(shared_dir, "ca.pem")
    with open(ca_file, "w") as handle:
        handle.write("x")
    os.chmod(ca_file, 0o600)
    done = run(MQ_SEND, "--queue-dir", queue_dir, "--smtp-host", "127.0.0.1", "--smtp-port", "1", as_nobody=True)
    assert done.returncode == 0, done.stderr  # the queue itself is usable by nobody
    ini = os.path.join(shared_dir, "app.ini")
    with open(ini, "w") as handle:
        handle.write(f"[app:main]\nmq.queue_dir = {queue_dir}\nmq.smtp_ca_file = {ca_file}\n")
    os.chmod(ini, 0o644)
    done = run(MQ_SEND, ini, as_nobody=True)
    assert_configuration_error(done, "mq.smtp_ca_file", ca_file, "owned by root", "mode 0600", "nobody")


@pytest.mark.slow
def test_an_unreadable_password_file_is_named_at_start_up(queue_dir, tmp_path):
    done = mq_send_with(queue_dir, tmp_path, {"mq.smtp_username": "u", "mq.smtp_password_file": tmp_path / "pw"})
    assert_configuration_error(done, "mq.smtp_password_file", tmp_path / "pw", "does not exist")


@pytest.mark.parametrize("name", ["mq.delivery_log", "mq.smtp_log"])
@pytest.mark.slow
def test_a_log_file_in_a_missing_directory_is_named_at_start_up(queue_dir, tmp_path, name):
    path = tmp_path / "absent" / "x.log"
    done = mq_send_with(queue_dir, tmp_path, {name: path})
    assert_configuration_error(done, name, path, "does not exist")


@pytest.mark.slow
def test_a_log_path_that_is_a_directory_is_named_at_start_up(queue_dir, tmp_path):
    done = mq_send_with(queue_dir, tmp_path, {"mq.delivery_log": tmp_path})
    assert_configuration_error(done, "mq.delivery_log", "is a directory")


# -- AUTH over plaintext (issue 10 item 7) -----------------------------------------------


@pytest.mark.slow
def test_auth_in_clear_to_a_remote_host_is_refused_naming_the_settings(queue_dir):
    done = run(
        MQ_SEND,
        "--queue-dir",
        queue_dir,
        "--smtp-host",
        "smtp.example.com",
        "--smtp-tls",
        "none",
        "--smtp-username",
        "app",
    )
    assert_configuration_error(
        done, "mq.smtp_tls", "mq.smtp_username", "smtp.example.com", "mq.smtp_allow_plaintext_auth"
    )


def test_auth_in_clear_is_allowed_when_said_so_or_to_a_loopback_host():
    remote = {"mq.queue_dir": "/q", "mq.smtp_host": "10.1.2.3", "mq.smtp_tls": "none", "mq.smtp_username": "app"}
    with pytest.raises(mq_transaction.ConfigurationError) as caught:
        parse_settings(remote)
    assert caught.value.key == "mq.smtp_tls"
    assert parse_settings({**remote, "mq.smtp_allow_plaintext_auth": "true"}).smtp_allow_plaintext_auth is True
    assert parse_settings({**remote, "mq.smtp_host": "127.0.0.1"}).smtp_username == "app"
    assert parse_settings({**remote, "mq.smtp_tls": "starttls"}).smtp_username == "app"
    with pytest.raises(mq_transaction.ConfigurationError):  # the default for a remote host is starttls
        parse_settings({**remote, "mq.smtp_tls": "none", "mq.smtp_username": "x"})


def test_config_include_refuses_auth_in_clear_too(tmp_path):
    error = include_error(
        {
            "mq.queue_dir": str(tmp_path),
            "mq.smtp_host": "mail.example.org",
            "mq.smtp_tls": "none",
            "mq.smtp_username": "a",
        }
    )
    assert error.key == "mq.smtp_tls"


# -- sections and keys (issue 10 items 9, 10) --------------------------------------------


@pytest.mark.slow
def test_a_missing_section_is_named_with_the_app_sections_the_file_has(tmp_path, queue_dir):
    ini = tmp_path / "dev.ini"
    ini.write_text(f"[app:main]\nmq.queue_dir = {queue_dir}\n\n[app:mailer]\nmq.queue_dir = {queue_dir}\n")
    for command in (MQ_SEND, [*MQ_QUEUE]):
        args = [f"{ini}#foo"] + (["status"] if command == MQ_QUEUE else [])
        done = run(command, *args)
        assert_configuration_error(done, "CONFIG_URI", "has no [app:foo] section", "[app:main], [app:mailer]")
        assert "mq.queue_dir" not in done.stderr


@pytest.mark.slow
def test_an_ini_whose_app_is_not_main_says_which_sections_it_has(tmp_path, queue_dir):
    ini = tmp_path / "dev.ini"
    ini.write_text(f"[app:signupapp]\nuse = egg:signupapp\nmq.queue_dir = {queue_dir}\n")
    done = run(MQ_SEND, ini)
    assert_configuration_error(done, "has no [app:main] section", "[app:signupapp]", f"{ini}#signupapp")


@pytest.mark.parametrize("command", [MQ_SEND, MQ_QUEUE])
@pytest.mark.slow
def test_an_unknown_key_names_the_closest_known_one_in_both_tools(tmp_path, queue_dir, command):
    ini = tmp_path / "dev.ini"
    ini.write_text(f"[app:main]\nmq.queue_dir = {queue_dir}\nmq.smtp_hots = mail.example.org\n")
    done = run(command, ini, *(["status"] if command == MQ_QUEUE else []))
    assert_configuration_error(done, "mq.smtp_hots: unknown setting; did you mean mq.smtp_host?")


def test_config_include_names_the_closest_known_key(tmp_path):
    error = include_error({"mq.queue_dir": str(tmp_path), "mq.smtp_hots": "x"})
    assert error.key == "mq.smtp_hots"
    assert "did you mean mq.smtp_host?" in str(error)


# -- the password in an ini file (issue 12 item 7) ---------------------------------------


@pytest.mark.slow
def test_a_password_with_a_bare_percent_is_an_error_that_never_shows_it(tmp_path, queue_dir):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[app:main]\nmq.queue_dir = {queue_dir}\nmq.smtp_password = Xy%(zz-secret\n")
    done = run(MQ_SEND, ini)
    assert_configuration_error(done, "mq.smtp_password", "'%%'")
    assert "zz-secret" not in done.stderr and "Xy" not in done.stderr


def test_a_percent_in_a_password_is_written_doubled_as_everywhere_in_the_ini(tmp_path, queue_dir):
    ini = tmp_path / "app.ini"
    ini.write_text(f"[app:main]\nmq.queue_dir = {queue_dir}\nmq.smtp_password = a%%(here)s%%b\n")
    assert load_settings(str(ini), {}).smtp_password == "a%(here)s%b"


@pytest.mark.slow
def test_a_password_with_percent_signs_authenticates_with_exactly_those_characters(tmp_path, queue_dir):
    from aiosmtpd.smtp import AuthResult

    password = "p%(here)s%w"

    def authenticator(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=auth_data.password == password.encode(), handled=False)

    sink = Sink(RecordingHandler(), authenticator=authenticator, auth_required=True, auth_require_tls=False)
    try:
        commit_one(queue_dir)
        ini = tmp_path / "app.ini"
        ini.write_text(
            f"[app:main]\nmq.queue_dir = {queue_dir}\nmq.smtp_host = 127.0.0.1\nmq.smtp_port = {sink.port}\n"
            "mq.smtp_username = app\nmq.smtp_password = p%%(here)s%%w\n"
        )
        done = run(MQ_SEND, ini)
        assert done.returncode == 0, done.stderr
        assert len(sink.received) == 1
    finally:
        sink.stop()


@pytest.mark.parametrize("where", ["ini", "file"])
@pytest.mark.slow
def test_a_non_ascii_password_is_a_configuration_error_not_a_traceback(tmp_path, queue_dir, where):
    commit_one(queue_dir)
    if where == "ini":
        settings = {"mq.smtp_username": "app", "mq.smtp_password": "pässwörd"}
        key = "mq.smtp_password"
    else:
        (tmp_path / "pw").write_text("pässwörd\n", encoding="utf-8")
        settings = {"mq.smtp_username": "app", "mq.smtp_password_file": tmp_path / "pw"}
        key = "mq.smtp_password_file"
    done = mq_send_with(queue_dir, tmp_path, settings)
    assert_configuration_error(done, key, "outside ASCII")
    assert "pässwörd" not in done.stderr and "wörd" not in done.stderr
