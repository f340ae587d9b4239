"""The ``failures`` table: files that failed to decode, not retried until they change."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from clipdex.index.store.scope import rows_at

if TYPE_CHECKING:
    from clipdex.index.store.database import Store


class FailuresTable:
    """Reads and writes of ``failures`` (each write in its own transaction)."""

    def __init__(self, store: Store):
        self._store = store

    def all(
        self, paths: Sequence[bytes] | None = None, folders: Sequence[bytes] = ()
    ) -> dict[bytes, tuple[int, int]]:
        """path -> (size, mtime_ns) of every remembered decode failure (with ``paths``: of those
        paths and of the files under ``folders`` only)."""
        if paths is None:
            rows = self._store.conn.execute("SELECT path, size, mtime_ns FROM failures")
        else:
            rows = rows_at(
                self._store.conn, "SELECT path, size, mtime_ns FROM failures WHERE", paths, folders
            )
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
