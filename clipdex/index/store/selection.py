"""Which items a `Filter` keeps: the SQL of `clipdex.index.filters` run against the store.

``store.selection.where(kind, filt)`` builds the statement (`clipdex.index.store.where`);
the other methods run it: all matching ids, a count, or which of a few candidates it keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from clipdex.index.store.batches import chunks
from clipdex.index.store.where import Where, where

if TYPE_CHECKING:
    from clipdex.index.filters import Filter
    from clipdex.index.store.database import Store


class Selection:
    """Filtered reads of ``items``."""

    def __init__(self, store: Store):
        self._store = store

    def where(self, kind: str, filt: Filter) -> Where:
        """The SQL selecting the items of ``kind`` that ``filt`` keeps (see `where.where`)."""
        return where(kind, filt, has_dates=self._store.has_columns("items", "taken_at"),
                     has_words=not filt.words or self._store.has_table("words"))  # fmt: skip

    def matching_ids(self, kind: str, filt: Filter) -> np.ndarray:
        """Ids (ascending) of the items of ``kind`` that ``filt`` keeps, scores aside."""
        w = self.where(kind, filt)
        rows = self._store.conn.execute(f"SELECT x.id {w.sql} ORDER BY x.id", w.args).fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def count_where(self, w: Where) -> int:
        """How many items ``w`` selects."""
        return self._store.conn.execute(f"SELECT count(*) {w.sql}", w.args).fetchone()[0]

    def kept_among(self, w: Where, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` (a few candidates) ``w`` selects, looked up by id."""
        ids = list(ids)
        if w.words:  # the candidates' own word documents, not the (maybe long) list of all matches
            for query in w.words:
                ids = self._store.words.among(query, ids)
            w = w.base
        # NOT INDEXED: look the few candidates up by rowid rather than walking the (kind, ...) indexes
        by_id = w.sql.replace("FROM items x", "FROM items x NOT INDEXED", 1)
        keep: set[int] = set()
        for chunk in chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self._store.conn.execute(f"SELECT x.id {by_id} AND x.id IN ({marks})", [*w.args, *chunk])
            keep.update(r[0] for r in rows)
        return keep
