"""The ``meta`` table: the library's key/value settings (schema version, generation, model, dim…)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipdex.index.store.database import Store


class MetaTable:
    """Reads and writes of ``meta`` over the store's connection (writes join the caller's
    transaction)."""

    def __init__(self, store: Store):
        self._store = store

    def get(self, key: str) -> str | None:
        row = self._store.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set(self, key: str, value: str | None) -> None:
        """Store ``value`` under ``key``; None deletes the key."""
        conn = self._store.conn
        if value is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
