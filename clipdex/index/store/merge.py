"""Keyed upserts: import rows matched to stored items by image path or exact text.

A known key keeps its item's id (its vector updated in place when it changed); an unknown key is
a new item. Set-based SQL through temporary tables, so a million-row import stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from clipdex.index.store.rows import Merged

if TYPE_CHECKING:
    from clipdex.index.store.database import Store
    from clipdex.index.store.items import ItemsTable
    from clipdex.index.store.vector_files import VectorFiles

# A unit vector kept as float16 differs from its float32 source by at most ~2.5e-4 a component; a
# re-imported vector within this of the stored one is the same vector (unchanged, not updated).
FLOAT16_TOLERANCE = 2e-3


class KeyedMerge:
    """Upserts of keyed rows into ``items`` (through `ItemsTable`'s writes, which log them)."""

    def __init__(self, store: Store, items: ItemsTable, files: VectorFiles):
        self._store = store
        self._items = items
        self._files = files

    def keyed(
        self, kind: str, source: str, keys: Sequence, vectors: np.ndarray,
        located: tuple[int, np.ndarray] | None = None,
    ) -> Merged:  # fmt: skip
        """Upsert rows keyed by image path (bytes) or exact text (non-sidecar texts).

        A known key with an equal vector is unchanged, with another vector it is updated in place
        (same id); an unknown key is inserted. ``located``: (vector file id, the file row of each
        of ``vectors``) when they already sit in a vector file (large-library mode); a vector kept
        there as float16 counts as equal within FLOAT16_TOLERANCE. A key repeated within one run
        (see `session`) counts once: the first row wins, later ones are unchanged. Set-based SQL
        through a temporary table: no per-row round trips, so a million-row import stays fast.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(vectors)
        column = "path" if kind == "image" else "text"
        # A video's frames share its path: they are merged by `FrameMerge`, never matched here.
        excluded = " AND i.source != 'video'" if kind == "image" else " AND i.source != 'sidecar'"
        with self._store.transaction():
            c = self._store.conn
            c.execute("DELETE FROM temp.merge_rows")
            c.executemany(
                "INSERT OR IGNORE INTO temp.merge_rows (key, row) VALUES (?, ?)", zip(keys, range(n))
            )
            c.execute("DELETE FROM temp.merge_rows WHERE key IN (SELECT key FROM temp.merge_seen)")
            c.execute("INSERT INTO temp.merge_seen (key) SELECT key FROM temp.merge_rows")
            rows = {r for (r,) in c.execute("SELECT row FROM temp.merge_rows")}
            # min(): SQLite takes the bare columns (vector, vfile, vrow) from the row holding the
            # minimum id.
            matched = c.execute(
                f"SELECT m.row, min(i.id), i.vector, i.vfile, i.vrow FROM temp.merge_rows m JOIN items i"
                f" ON i.kind = ? AND i.{column} = m.key{excluded} GROUP BY m.row",
                (kind,),
            ).fetchall()
            changed: list[tuple[int, int]] = []
            in_files: list[tuple[int, int, int, int]] = []
            for r, i, blob, vfile, vrow in matched:
                if blob is not None:
                    if blob != vectors[r].tobytes():
                        changed.append((r, i))
                elif vfile is not None:
                    in_files.append((r, i, vfile, vrow))
                else:  # no stored vector at all: the new one replaces the nothing
                    changed.append((r, i))
            if in_files:  # float16 rows of a vector file: equal up to the float16 rounding
                pairs = np.array(in_files, np.int64)
                diff = np.abs(self._files.read(pairs[:, 2], pairs[:, 3]) - vectors[pairs[:, 0]]).max(axis=1)
                changed += [(int(r), int(i)) for r, i, _, _ in pairs[diff > FLOAT16_TOLERANCE]]
            changed.sort()
            updated_rows = np.array([r for r, _ in changed], np.int64)
            updated_ids = np.array([i for _, i in changed], np.int64)

            def at(rows: np.ndarray) -> tuple[int, np.ndarray] | None:
                return None if located is None else (located[0], np.asarray(located[1])[rows])

            if changed:
                self._items.update_vectors(
                    updated_ids.tolist(), vectors[updated_rows], located=at(updated_rows)
                )
            fresh = sorted(rows - {r for r, *_ in matched})
            new_rows = np.array(fresh, np.int64)
            fresh_keys = [keys[r] for r in fresh]
            new_ids = self._items.insert_many(
                kind, source, vectors[new_rows],
                paths=fresh_keys if kind == "image" else None, texts=fresh_keys if kind != "image" else None,
                located=at(new_rows),
            ) if fresh else np.empty(0, np.int64)  # fmt: skip
        return Merged(new_ids, new_rows, updated_ids, updated_rows, n - len(fresh) - len(changed))

    @contextmanager
    def session(self) -> Iterator[None]:
        """The temporary tables `keyed` uses for one import session (keys seen so far collapse)."""
        c = self._store.conn
        c.execute("CREATE TEMP TABLE IF NOT EXISTS merge_rows (key PRIMARY KEY, row INTEGER)")
        c.execute("CREATE TEMP TABLE IF NOT EXISTS merge_seen (key PRIMARY KEY)")
        try:
            yield
        finally:
            c.execute("DROP TABLE IF EXISTS temp.merge_rows")
            c.execute("DROP TABLE IF EXISTS temp.merge_seen")

    def known_texts(self, texts: Sequence[str]) -> set[str]:
        """Which of ``texts`` are already stored as non-sidecar texts (exact content)."""
        c = self._store.conn
        c.execute("CREATE TEMP TABLE IF NOT EXISTS probe_texts (text TEXT PRIMARY KEY)")
        try:
            c.execute("DELETE FROM temp.probe_texts")
            c.executemany("INSERT OR IGNORE INTO temp.probe_texts VALUES (?)", ((t,) for t in texts))
            rows = c.execute(
                "SELECT p.text FROM temp.probe_texts p WHERE EXISTS (SELECT 1 FROM items i"
                " WHERE i.kind = 'text' AND i.text = p.text AND i.source != 'sidecar')"
            )
            return {t for (t,) in rows}
        finally:
            c.execute("DROP TABLE IF EXISTS temp.probe_texts")
