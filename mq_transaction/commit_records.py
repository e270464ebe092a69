"""Commit records: a transaction's several messages published all together, even across a crash.

Several renames from ``tmp/`` into ``new/`` are not atomic together, so a process killed
among them would publish a part of a committed transaction. Before the first rename, the
ids are written durably to a commit record in ``tmp/`` (:func:`write_commit_record`),
locked by its committer while the renames run; ``cleanup()`` finishes the renames of a
record whose process died (:func:`finish_interrupted_commits`: roll forward).
"""

from __future__ import annotations

import logging
import os

from .errors import QueueWriteError
from .queue_directory import READ_FLAGS, QueueDirectory, open_locked, read_all, scan
from .queue_ids import is_queue_id
from .states import TMP_DIR, MessageState

# The queue's logger: operators filter on one name for everything the directory queue reports.
log = logging.getLogger("mq_transaction.queue")

#: A commit record in ``tmp/``: the ids of a transaction's messages, one per line, then this end line.
COMMIT_RECORD_PREFIX = ".commit-"
COMMIT_RECORD_END = "end"
#: An unlocked commit record without its end line is removed once this old (seconds): its
#: process died while writing it, before any of its messages was published.
INCOMPLETE_RECORD_MAX_AGE = 600.0


def record_name(queue_ids: list[str]) -> str:
    """The name in ``tmp/`` of the commit record of a transaction's ``queue_ids``."""
    return COMMIT_RECORD_PREFIX + queue_ids[0]


def write_commit_record(directory: QueueDirectory, queue_ids: list[str]) -> tuple[str, int]:
    """Write the ids and an end line to ``tmp/.commit-<first id>``, durably; return its name, locked."""
    name = record_name(queue_ids)
    content = "".join(f"{queue_id}\n" for queue_id in queue_ids) + COMMIT_RECORD_END
    fd = directory.write_new_file(TMP_DIR, name, content.encode("ascii"), lock=True)
    try:
        directory.sync_dir(TMP_DIR)
    except OSError as exc:
        os.close(fd)
        directory.unlink_quietly(TMP_DIR, name)
        raise QueueWriteError(f"cannot fsync {directory.dirs[TMP_DIR]}: {exc.strerror or exc}") from exc
    return name, fd


def finish_interrupted_commits(directory: QueueDirectory, now: float) -> set[str]:
    """Roll forward: publish what is left in ``tmp/`` of each commit record whose process died.

    A record is locked by its live committer, so a record this process can lock is an
    orphan. A complete one (ending with its end line) was written before any rename:
    its transaction committed, and every id it names still in ``tmp/`` is published.
    An incomplete one was cut short before any rename; it is removed once it is old.
    Returns the ids named by the records of live committers (not to be cleaned up).
    """
    in_use: set[str] = set()
    tmp = directory.fd(TMP_DIR)
    records = [entry.name for entry in scan(tmp, dotfiles=True) if entry.name.startswith(COMMIT_RECORD_PREFIX)]
    for name in records:
        path = directory.file(TMP_DIR, name)
        try:
            fd = open_locked(name, tmp)
        except OSError as exc:
            log.error("commit record %s: cannot open it: %s", path, exc.strerror)
            continue
        if fd is None:  # its committer is renaming right now: leave its messages alone
            in_use.update(_read_ids(name, tmp))
            continue
        try:
            lines = read_all(fd).decode("ascii", "replace").split("\n")
            if lines[-1] != COMMIT_RECORD_END:
                if now - os.fstat(fd).st_mtime > INCOMPLETE_RECORD_MAX_AGE:
                    os.unlink(name, dir_fd=tmp)  # its process died before its transaction's commit was recorded
                continue
            finished = []
            for queue_id in lines[:-1]:
                if not is_queue_id(queue_id):
                    continue
                try:
                    directory.rename(queue_id, TMP_DIR, MessageState.QUEUED)
                except FileNotFoundError:
                    continue  # published before the process died
                finished.append(queue_id)
            directory.sync_dir(MessageState.QUEUED)
            os.unlink(name, dir_fd=tmp)
            if finished:
                log.warning(
                    "finished publishing %d of the %d messages of a transaction whose process died while "
                    "committing it (commit record %s): queue ids %s",
                    len(finished),
                    len(lines) - 1,
                    path,
                    ", ".join(finished),
                )
        except OSError as exc:
            log.error("commit record %s: cannot finish its publication: %s; retried next time", path, exc)
        finally:
            os.close(fd)
    return in_use


def _read_ids(name: str, dir_fd: int) -> list[str]:
    """The queue ids a commit record names (none if it vanished)."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return []
    try:
        return [line for line in read_all(fd).decode("ascii", "replace").split("\n") if is_queue_id(line)]
    finally:
        os.close(fd)
