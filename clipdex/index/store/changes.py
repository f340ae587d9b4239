"""The change log: which ids each write added or removed, by generation, so readers catch up.

Every write that adds, removes or changes a vector logs it in its transaction's generation; a
reader whose FAISS file is at generation G replays the log after G instead of rebuilding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from clipdex.index.store.batches import runs

if TYPE_CHECKING:
    from clipdex.index.store.database import Store


class ChangeLog:
    """The ``changes`` table (and its meta keys ``changes_since_<kind>``)."""

    def __init__(self, store: Store):
        self._store = store

    def log(self, op: str, kinds_ids: Iterable[tuple[str, int]]) -> None:
        """Record ``op`` of these (kind, id)s in this transaction's generation. Every write method
        that adds, removes or changes a vector calls this (an update: "remove" then "add")."""
        by_kind: dict[str, list[int]] = {}
        for kind, i in kinds_ids:
            by_kind.setdefault(kind, []).append(int(i))
        if not by_kind:
            return
        gen = self._store.bump_generation()
        rows = [
            (gen, kind, op, first, last) for kind, ids in by_kind.items() for first, last in runs(sorted(ids))
        ]
        self._store.conn.executemany(
            "INSERT INTO changes (generation, kind, op, first_id, last_id) VALUES (?, ?, ?, ?, ?)", rows
        )

    def logged_since(self, kind: str) -> int | None:
        """The log holds every change of ``kind`` after this generation (None: no log, old schema)."""
        value = self._store.meta.get(f"changes_since_{kind}")
        return int(value) if value is not None else None

    def between(self, kind: str, after: int, upto: int) -> list[tuple[str, int, int]]:
        """(op, first id, last id) of ``kind`` in generations (after, upto], in the order written."""
        return self._store.conn.execute(
            "SELECT op, first_id, last_id FROM changes WHERE kind = ? AND generation > ?"
            " AND generation <= ? ORDER BY seq",
            (kind, after, upto),
        ).fetchall()

    def prune(self, kind: str, upto: int) -> None:
        """Forget ``kind``'s changes up to generation ``upto`` (its FAISS file is saved at ``upto``)."""
        store = self._store
        with store.transaction():
            since = self.logged_since(kind) or 0
            if upto > since:
                store.conn.execute("DELETE FROM changes WHERE kind = ? AND generation <= ?", (kind, upto))
                store.meta.set(f"changes_since_{kind}", str(upto))
