"""One writer at a time: an OS lock (``flock``) on ``LIBRARY/write.lock``. Readers never take it.

The kernel releases the lock when its holder exits or is killed, so there is no stale-lock
takeover to get wrong (no check-then-unlink, no reused pids). The file keeps the holder's pid and
command line only to name it in the message a second writer gets. The lock is re-entrant within a
process (a writing command that opens the store for writing, which migrates under the same lock).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from clipdex.errors import ClipdexError, LockHeld

LOCK_NAME = "write.lock"

# Held locks of this process: lock path -> [fd, depth]. flock locks belong to an open file
# description, so a second open() + flock() in the same process would wait on itself.
_held: dict[str, list[int]] = {}
_guard = threading.RLock()


class ReadOnlyLibrary(ClipdexError):
    """The library's folder cannot be written (read-only mount, no permission)."""


def read_only_error(library_dir: Path) -> ReadOnlyLibrary:
    return ReadOnlyLibrary(
        f"library {library_dir} is read-only (searches and `info` work; writing needs write permission)"
    )


def command_line() -> str:
    """This process's command, as a user would recognise it (``clipdex index ~/Pictures``)."""
    prog = os.path.basename(sys.argv[0]) if sys.argv else "clipdex"
    argv = ["clipdex" if prog.endswith(".py") else prog, *sys.argv[1:]]  # `python -m clipdex.cli.main`
    line = " ".join(argv)
    return line if len(line) <= 120 else line[:117] + "..."


class WriterLock:
    """``with WriterLock(dir):`` — waits up to ``timeout`` seconds, then raises LockHeld naming the holder."""

    def __init__(self, library_dir: Path, timeout: float | None = None):
        self.library_dir = Path(library_dir)
        self.path = self.library_dir / LOCK_NAME
        env = os.environ.get("CLIPDEX_LOCK_TIMEOUT")
        self.timeout = timeout if timeout is not None else float(env) if env else 3.0
        self._entered = False

    def acquire(self) -> None:
        key = str(self.path.absolute())
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._entered = True
                return
            fd = self._open()
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = _describe(_read_holder(fd))
                        os.close(fd)
                        raise LockHeld(
                            f"another clipdex process ({holder}) is writing to library "
                            f"{self.library_dir}; try again when it ends"
                        ) from None
                    time.sleep(0.05)
            me = {"pid": os.getpid(), "host": socket.gethostname(), "cmd": command_line(),
                  "since": time.time()}  # fmt: skip
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            _held[key] = [fd, 1]
            self._entered = True

    def _open(self) -> int:
        if self.library_dir.is_dir() and not os.access(self.library_dir, os.W_OK):
            raise read_only_error(self.library_dir)
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise read_only_error(self.library_dir) from None
            if e.errno == errno.ENOENT:
                raise ClipdexError(f"no library at {self.library_dir}") from None
            raise

    def release(self) -> None:
        if not self._entered:
            return
        self._entered = False
        key = str(self.path.absolute())
        with _guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                try:
                    os.ftruncate(entry[0], 0)  # nobody holds it now: name nobody
                except OSError:
                    pass
                os.close(entry[0])  # closing releases the flock

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    pid = holder.get("pid", "?")
    where = "" if holder.get("host") in (None, socket.gethostname()) else f" on {holder['host']}"
    return f"pid {pid}: {holder.get('cmd') or 'clipdex'}{where}"
