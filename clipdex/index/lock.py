"""One writer at a time: a lock file holding the writer's pid. Readers never take it."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from clipdex.errors import LockHeld

LOCK_NAME = "write.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WriterLock:
    """``with WriterLock(dir):`` — waits up to ``timeout`` seconds, then raises LockHeld naming the holder.

    A lock left by a dead process on this host is stale and taken over.
    """

    def __init__(self, library_dir: Path, timeout: float | None = None):
        self.path = Path(library_dir) / LOCK_NAME
        env = os.environ.get("CLIPDEX_LOCK_TIMEOUT")
        self.timeout = timeout if timeout is not None else float(env) if env else 3.0
        self._held = False

    def acquire(self) -> None:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "cmd": " ".join(sys.argv[:2]),
            "since": time.time(),
        }
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None or self._stale(holder):
                    # Take over: remove only if it is still the same stale file.
                    self._remove_if_unchanged(holder)
                    continue
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        f"library is locked by another writer: pid {holder.get('pid')} "
                        f"({holder.get('cmd') or 'clipdex'}) on {holder.get('host')}; try again when it ends"
                    ) from None
                time.sleep(0.1)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            return

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # Half-written by a writer that is just starting, or garbage; treat as garbage only if old.
            try:
                if time.time() - self.path.stat().st_mtime > 5:
                    return None
            except FileNotFoundError:
                return {}
            return {"pid": "?", "host": "?"}

    def _stale(self, holder: dict) -> bool:
        if not holder:
            return True  # vanished between our open and read
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return False
        return holder.get("host") == socket.gethostname() and not _alive(pid)

    def _remove_if_unchanged(self, holder: dict | None) -> None:
        try:
            if holder and self._holder() != holder:
                return
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self._held:
            self._held = False
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
