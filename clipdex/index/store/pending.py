"""The ``pending_vectors`` table: a re-embedding's new vectors, written while searches keep using
the old ones and swapped in whole once complete (an interrupted run resumes from them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from clipdex.index.store.changes import ChangeLog
    from clipdex.index.store.database import Store
    from clipdex.index.store.items import ItemsTable
    from clipdex.index.store.vector_files import VectorFiles


class PendingTable:
    """Reads and writes of ``pending_vectors`` (meta ``pending_model`` names their model)."""

    def __init__(self, store: Store, items: ItemsTable, changes: ChangeLog, files: VectorFiles):
        self._store = store
        self._items = items
        self._changes = changes
        self._files = files

    def ids(self) -> set[int]:
        """Ids that have a pending vector."""
        return {r[0] for r in self._store.conn.execute("SELECT id FROM pending_vectors")}

    def put(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._store.transaction():
            self._store.conn.executemany(
                "INSERT OR REPLACE INTO pending_vectors (id, vector) VALUES (?, ?)",
                [(int(i), vectors[n].tobytes()) for n, i in enumerate(ids)],
            )

    def swap_in(self) -> list[int]:
        """Replace every vector by its pending one (one transaction); delete items without one.

        Returns the ids of the items deleted for lack of a pending vector (the caller decides
        beforehand whether that is allowed); their linked captions go with them.
        """
        with self._store.transaction():
            unmatched = "SELECT id FROM items WHERE id NOT IN (SELECT id FROM pending_vectors)"
            missing = [i for (i,) in self._store.conn.execute(unmatched)]
            self._store.conn.execute(
                "UPDATE items SET vector = (SELECT vector FROM pending_vectors p WHERE p.id = items.id)"
                " WHERE id IN (SELECT id FROM pending_vectors)"
            )
            changed = self._store.conn.execute(
                "SELECT kind, id FROM items WHERE id IN (SELECT id FROM pending_vectors)"
            ).fetchall()
            self._changes.log("remove", changed)  # an update: remove + add of the same id
            self._changes.log("add", changed)
            if missing:
                self._items.delete(missing)
            self._store.conn.execute("DELETE FROM pending_vectors")
            if self._files.large_mode:  # the new vectors came as blobs: into vector files, like all others
                self._files.enter_large_mode()
        return missing

    def clear(self) -> None:
        self._store.conn.execute("DELETE FROM pending_vectors")

    def exists(self) -> bool:
        """Whether the schema has the table (an older one, read as it is, may not)."""
        return self._store.has_table("pending_vectors")

    def stray_ids(self) -> list[int]:
        """Pending vectors no re-embedding will use: all of them when none is under way (no
        ``pending_model``), else those whose item is gone."""
        if not self.exists():
            return []
        if self._store.meta.get("pending_model") is None:
            return [r[0] for r in self._store.conn.execute("SELECT id FROM pending_vectors")]
        rows = self._store.conn.execute(
            "SELECT id FROM pending_vectors WHERE id NOT IN (SELECT id FROM items)"
        )
        return [r[0] for r in rows]

    def remove(self, ids: Sequence[int]) -> None:
        """Delete these ids' pending vectors (one transaction)."""
        with self._store.transaction():
            self._store.conn.executemany("DELETE FROM pending_vectors WHERE id = ?", [(int(i),) for i in ids])
