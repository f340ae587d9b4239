"""The ``failures`` table: files that failed to decode, not retried until they change."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipdex.index.store.database import Store


class FailuresTable:
    """Reads and writes of ``failures`` (each write in its own transaction)."""

    def __init__(self, store: Store):
        self._store = store

    def all(self) -> dict[bytes, tuple[int, int]]:
        """path -> (size, mtime_ns) of every remembered decode failure."""
        rows = self._store.conn.execute("SELECT path, size, mtime_ns FROM failures")
        return {bytes(p): (z, m) for p, z, m in rows}

    def record(self, rows: Sequence[tuple[bytes, int, int, str]]) -> None:
        """Remember (path, size, mtime_ns, error) of files that failed to decode."""
        now = time.time()
        with self._store.transaction():
            self._store.conn.executemany(
                "INSERT OR REPLACE INTO failures (path, size, mtime_ns, error, failed_at)"
                " VALUES (?, ?, ?, ?, ?)",
                ((p, z, m, e, now) for p, z, m, e in rows),
            )

    def forget(self, paths: Iterable[bytes]) -> None:
        with self._store.transaction():
            self._store.conn.executemany("DELETE FROM failures WHERE path = ?", ((p,) for p in paths))

    def count(self) -> int:
        try:
            return self._store.conn.execute("SELECT count(*) FROM failures").fetchone()[0]
        except sqlite3.OperationalError:  # an older schema, read without migrating
            return 0
