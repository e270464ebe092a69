"""Start-up checks of what the settings name on disk: the queue's permissions, files, log directories.

Each problem is a :class:`~mq_transaction.errors.ConfigurationError` naming the key and the
path, raised before any work, so that a wrong path or mode is exit status 2 at start-up
(and a Pyramid ``ConfigurationError`` at ``config.include`` time) rather than a delivery
error, a retry loop or a traceback later. Nothing here reads a secret into a message.
"""

from __future__ import annotations

import grp
import os
import pwd
import ssl
import stat

from .errors import ConfigurationError
from .settings import Settings, key
from .states import STATE_DIRS, TMP_DIR

#: Where the docs explain running the app and the sender as two users.
PERMISSIONS_DOC = "docs: queue.md, 'Permissions and mq.group_access'"


def running_user() -> str:
    """``name (uid N)`` of the user this process runs as (its effective uid)."""
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def describe_owner(path: str) -> str:
    """``owned by USER, group GROUP, mode 0700`` for ``path`` (what ``ls -l`` would show)."""
    st = os.stat(path)
    return f"owned by {_user_name(st.st_uid)}, group {_group_name(st.st_gid)}, mode {stat.S_IMODE(st.st_mode):04o}"


def _can(path: str, mode: int) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def _needs(mode: int) -> str:
    words = [word for bit, word in ((os.R_OK, "read"), (os.W_OK, "write")) if mode & bit]
    return " and ".join(words) or "enter"


def permission_problem(path: str, mode: int, tool: str, owner_hint: bool = True) -> str:
    """What to tell an operator when ``tool`` cannot ``mode`` (``os.R_OK``...) ``path``."""
    user = running_user()
    text = f"{tool} runs as {user}, which cannot {_needs(mode)} {path}: it is {describe_owner(path)}."
    if owner_hint:
        owner = _user_name(os.stat(path).st_uid)
        text += (
            f" Run {tool} as {owner}, or put both users in one group, give the queue to that group"
            f" (set-group-ID directories) and set {key('group_access')} = true ({PERMISSIONS_DOC})."
        )
    return text


def check_queue_access(path: str, *, write: bool, tool: str, write_root: bool = False) -> None:
    """Check that this process can use the queue directory at ``path`` and its state directories.

    ``write`` asks for what a sender or a command that moves messages needs (read, write
    and enter every state directory); without it, reading and entering are enough.
    ``write_root`` asks to write the queue directory itself too (the daemon's lock file, a
    missing state directory to create). A missing ``path`` is not checked here (its opener
    decides whether to create it).
    """
    setting = key("queue_dir")
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise ConfigurationError(setting, f"{path} is not a directory")
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    root_mode = os.R_OK | os.X_OK | (os.W_OK if write_root else 0)
    if not _can(path, root_mode):
        raise ConfigurationError(setting, permission_problem(path, root_mode, tool))
    for name in (TMP_DIR, *STATE_DIRS.values()):
        directory = os.path.join(path, name)
        if os.path.isdir(directory) and not _can(directory, mode):
            raise ConfigurationError(setting, permission_problem(directory, mode, tool))


def make_parent_directories(path: str, tool: str) -> None:
    """Create the missing parent directories of the queue directory ``path``, as the docs promise."""
    parent = os.path.dirname(os.path.abspath(path))
    missing = parent
    while not os.path.exists(missing):
        missing = os.path.dirname(missing)
    if not os.path.isdir(missing):
        raise ConfigurationError(key("queue_dir"), f"cannot create {path}: {missing} is not a directory")
    try:
        os.makedirs(parent, exist_ok=True)
    except PermissionError:
        raise ConfigurationError(
            key("queue_dir"),
            f"cannot create {parent}: " + permission_problem(missing, os.W_OK | os.X_OK, tool, owner_hint=False),
        ) from None
    except OSError as exc:
        raise ConfigurationError(key("queue_dir"), f"cannot create {path}: {exc.strerror}") from None


def check_readable_file(setting: str, path: str, tool: str) -> None:
    """``path`` is a file this process can read; else a ConfigurationError naming ``setting``."""
    if not os.path.exists(path):
        raise ConfigurationError(setting, f"{path} does not exist")
    if not os.path.isfile(path):
        raise ConfigurationError(setting, f"{path} is not a file")
    if not _can(path, os.R_OK):
        raise ConfigurationError(setting, permission_problem(path, os.R_OK, tool, owner_hint=False))


def check_ca_file(path: str, tool: str) -> None:
    """``mq.smtp_ca_file`` is a readable PEM file of CA certificates that OpenSSL accepts."""
    setting = key("smtp_ca_file")
    check_readable_file(setting, path, tool)
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigurationError(
            setting, f"{path} holds no CA certificate OpenSSL can read (want PEM certificates): {exc.reason}"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(setting, f"cannot read {path}: {exc}") from None


def check_log_file(setting: str, path: str, tool: str) -> None:
    """The log file at ``path`` can be appended to, or created in its directory."""
    if os.path.isdir(path):
        raise ConfigurationError(setting, f"{path} is a directory; name a file")
    if os.path.exists(path):
        if not _can(path, os.W_OK):
            raise ConfigurationError(setting, permission_problem(path, os.W_OK, tool, owner_hint=False))
        return
    check_directory_for(setting, path, tool)


def check_directory_for(setting: str, path: str, tool: str) -> None:
    """The directory that holds ``path`` exists and this process can create files in it."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigurationError(setting, f"the directory of {path} ({directory}) does not exist")
    if not _can(directory, os.W_OK | os.X_OK):
        raise ConfigurationError(
            setting,
            f"cannot create {path}: " + permission_problem(directory, os.W_OK | os.X_OK, tool, owner_hint=False),
        )


def check_password(settings: Settings, tool: str) -> None:
    """The password file is readable, and the password is text ``AUTH`` can send (ASCII).

    smtplib encodes every ``AUTH`` exchange as ASCII, so a password with other characters
    would fail at every delivery; it is refused here instead. The value never appears.
    """
    if settings.smtp_password_file:
        check_readable_file(key("smtp_password_file"), settings.smtp_password_file, tool)
    try:
        password = settings.read_password()
    except UnicodeDecodeError:
        raise ConfigurationError(
            key("smtp_password_file"), f"{settings.smtp_password_file} is not UTF-8 text"
        ) from None
    setting = key("smtp_password_file") if settings.smtp_password is None else key("smtp_password")
    if password is not None and not password.isascii():
        raise ConfigurationError(
            setting,
            "the password holds characters outside ASCII, which SMTP AUTH (as smtplib sends it) cannot carry;"
            " choose an ASCII password (the value is not shown)",
        )
    if settings.smtp_username is not None and not settings.smtp_username.isascii():
        raise ConfigurationError(key("smtp_username"), "holds characters outside ASCII, which AUTH cannot carry")


def check_sender_start(settings: Settings, *, daemon: bool = False, tool: str = "mq-send") -> None:
    """Everything ``mq-send`` reads or writes, checked before it starts (the daemon: its lock too)."""
    if settings.queue_dir:
        check_queue_access(settings.queue_dir, write=True, tool=tool, write_root=daemon)
    if settings.smtp_ca_file:
        check_ca_file(settings.smtp_ca_file, tool)
    check_password(settings, tool)
    for name in ("delivery_log", "smtp_log"):
        path = getattr(settings, name)
        if path:
            check_log_file(key(name), path, tool)
    if settings.metrics_file:
        check_directory_for(key("metrics_file"), settings.metrics_file, tool)


def check_operator_start(settings: Settings, *, write: bool, tool: str = "mq-queue") -> None:
    """What ``mq-queue`` reads (and, for commands that move messages, writes)."""
    if settings.queue_dir:
        check_queue_access(settings.queue_dir, write=write, tool=tool)
    if settings.delivery_log and os.path.exists(settings.delivery_log):
        check_readable_file(key("delivery_log"), settings.delivery_log, tool)


def check_app_start(settings: Settings, tool: str = "the web app") -> None:
    """What the web app needs before it opens the queue: the parents made, the queue writable."""
    if not settings.queue_dir:
        return
    make_parent_directories(settings.queue_dir, tool)
    check_queue_access(settings.queue_dir, write=True, tool=tool, write_root=True)
