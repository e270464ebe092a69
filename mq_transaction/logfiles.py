"""Log files that follow log rotation by themselves, created with a private mode.

The delivery log and the SMTP dialog log are :class:`logging.handlers.WatchedFileHandler`
files: before each line the handler checks that the file at the path is still the one it
has open, and reopens it when logrotate moved or removed it, so neither a one-shot run nor
the daemon needs a signal after rotation (the daemon's ``SIGHUP`` still reopens them, and
every file handler of the ini's logging configuration).
"""

from __future__ import annotations

import io
import logging.handlers
import os


class LogFileHandler(logging.handlers.WatchedFileHandler):
    """A ``WatchedFileHandler`` that creates its file with ``mode`` and writes line by line.

    The mode applies when the file is created (after logrotate too); an existing file keeps
    its own. Holding addresses, these files are ``0600`` by default, not the umask's ``0644``.
    """

    def __init__(self, path: str, mode: int = 0o600) -> None:
        self.create_mode = mode
        super().__init__(path, encoding="utf-8")

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.create_mode)
        stream = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        assert isinstance(stream, io.TextIOWrapper)
        return stream

    def write_line(self, line: str) -> None:
        """Append ``line`` and a newline to the file now at the path; errors are raised, not logged.

        (``emit()`` hands a failed write to ``handleError``, which prints it and goes on:
        the delivery log must know when a line was not written, as on a full disk.)
        """
        self.acquire()
        try:
            self.reopenIfNeeded()
            stream = self.stream
            if stream is None:  # closed by the daemon's SIGHUP handling: reopen
                stream = self.stream = self._open()
                self._statstream()
            stream.write(line + "\n")
        finally:
            self.release()

    def reopen(self) -> None:
        """Close the file and open the one now at the path (the daemon's ``SIGHUP``)."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
            self._statstream()
        finally:
            self.release()
