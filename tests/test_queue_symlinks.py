"""A hostile queue directory: symbolic links and foreign owners are refused, never followed.

In the two-user setup the web app owns the queue root. A compromised web app must not be
able to make the sender (or root) delete or truncate files it could not touch itself.
"""

from __future__ import annotations

import os
import pwd
import shutil
import time

import pytest

from mq_transaction import MessageQueue
from mq_transaction.errors import QueueWriteError

OLD = time.time() - 3 * 86400


def victim_directory(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    precious = victim / "precious.db"
    precious.write_text("not mail\n")
    os.utime(precious, (OLD, OLD))
    return victim, precious


def test_a_state_directory_replaced_by_a_symlink_is_refused_at_open(tmp_path):
    victim, precious = victim_directory(tmp_path)
    MessageQueue(tmp_path / "queue")
    shutil.rmtree(tmp_path / "queue" / "tmp")
    os.symlink(victim, tmp_path / "queue" / "tmp")
    with pytest.raises(QueueWriteError, match="symbolic link"):
        MessageQueue(tmp_path / "queue")
    assert precious.exists()


def test_cleanup_never_deletes_through_a_symlink_swapped_in_after_open(tmp_path, caplog):
    victim, precious = victim_directory(tmp_path)
    queue = MessageQueue(tmp_path / "queue")
    shutil.rmtree(tmp_path / "queue" / "tmp")
    os.symlink(victim, tmp_path / "queue" / "tmp")
    assert queue.cleanup(max_age=3600) == []
    assert precious.exists()
    assert "not a real directory of the queue" in caplog.text


def test_cleanup_still_removes_stale_files_of_the_real_tmp(tmp_path):
    queue = MessageQueue(tmp_path / "queue")
    stale = tmp_path / "queue" / "tmp" / "20261127T101010123456Z-0123456789"
    stale.write_bytes(b"left by a killed request")
    os.utime(stale, (OLD, OLD))
    assert queue.cleanup(max_age=3600) == [stale.name]
    assert not stale.exists()


def test_a_state_directory_owned_by_someone_else_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test changes a directory's owner: run the suite as root, as CI does")
    MessageQueue(tmp_path / "queue")
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(tmp_path / "queue" / "deferred", nobody, -1)
    with pytest.raises(QueueWriteError, match=f"belongs to user id {nobody}"):
        MessageQueue(tmp_path / "queue")
