"""The stored vectors of items, wherever they are kept: a float32 blob in ``items.vector``, or in
large-library mode a float16 row of a vector file (``items.vfile``, ``items.vrow``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clipdex.index.store.batches import chunks
from clipdex.index.store.items import item_cols, item_of_row
from clipdex.index.store.rows import Item

if TYPE_CHECKING:
    from clipdex.index.store.database import Store
    from clipdex.index.store.vector_files import VectorFiles

StoredVector = tuple[bytes | None, int | None, int | None]  # (blob, vector file id, row)


class ItemVectors:
    """Reads of the items' vectors (float32, in the order asked) and the values a write stores."""

    def __init__(self, store: Store, files: VectorFiles):
        self._store = store
        self._files = files

    def columns(self) -> str:
        """The columns holding a vector: the blob, and in large-library mode a vector file row."""
        return "vector, vfile, vrow" if self._files.available() else "vector, NULL, NULL"

    def decode(self, rows: list[tuple], dim: int | None = None) -> np.ndarray:
        """float32 vectors of (…, blob, vfile, vrow) rows: the blob, else the vector file's row."""
        dim = dim or self._store.dim or 0
        out = np.zeros((len(rows), dim), np.float32)
        blob_at = [n for n, r in enumerate(rows) if r[-3] is not None]
        if blob_at:
            joined = b"".join(rows[n][-3] for n in blob_at)
            out[blob_at] = np.frombuffer(joined, np.float32).reshape(len(blob_at), -1)
        if len(blob_at) < len(rows):
            file_at = [n for n, r in enumerate(rows) if r[-3] is None and r[-2] is not None]
            if file_at:
                files = np.fromiter((rows[n][-2] for n in file_at), np.int64, len(file_at))
                offsets = np.fromiter((rows[n][-1] for n in file_at), np.int64, len(file_at))
                out[file_at] = self._files.read(files, offsets)
        return out

    def iter(self, kind: str, batch: int = 262_144) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) of one kind by chunks of ``batch``, ascending id (bounded memory)."""
        cur = self._store.conn.execute(
            f"SELECT id, {self.columns()} FROM items WHERE kind = ? ORDER BY id", (kind,)
        )
        while rows := cur.fetchmany(batch):
            yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), self.decode(rows)

    def iter_stored(self, batch: int) -> Iterator[list[tuple[int, bytes | None, int | None, int | None]]]:
        """(id, blob, vector file id, row) of every item, by chunks of ``batch``, undecoded: for
        `check`, which judges each blob's length and each file row itself."""
        cur = self._store.conn.execute(f"SELECT id, {self.columns()} FROM items")
        while rows := cur.fetchmany(batch):
            yield rows

    def all(self, kind: str, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of one kind, ascending id; read in chunks to bound peak memory."""
        dim = self._store.dim or 0
        total = self._store.conn.execute("SELECT count(*) FROM items WHERE kind = ?", (kind,)).fetchone()[0]
        ids = np.empty(total, np.int64)
        vecs = np.empty((total, dim), np.float32)
        n = 0
        for chunk_ids, chunk in self.iter(kind, batch):
            ids[n : n + len(chunk_ids)] = chunk_ids
            vecs[n : n + len(chunk_ids)] = chunk
            n += len(chunk_ids)
        return ids[:n], vecs[:n]

    def get(self, ids: Sequence[int] | np.ndarray, items: dict[int, Item] | None = None) -> np.ndarray:
        """Stored vectors for ``ids`` in the given order (exact re-ranking reads these); with
        ``items``, their rows' Item records go there too (a search's results are among the
        candidates it re-ranks: one query serves both)."""
        # One indexed query per 500 ids and one buffer join: no per-row Python work beyond the fetch
        # (this runs on every search), and no other query (each costs ~0.1 ms with cold caches).
        # Ids without a stored vector get zeros.
        want = np.asarray(ids, np.int64).reshape(-1)
        rows: list[tuple] = []
        cols = f"{item_cols(self._store) if items is not None else 'id'}, {self.columns()}"
        for chunk in chunks(want.tolist(), 500):
            marks = ",".join("?" * len(chunk))
            rows += self._store.conn.execute(f"SELECT {cols} FROM items WHERE id IN ({marks})", chunk)
        if items is not None:
            items.update((r[0], item_of_row(r)) for r in rows)
        rows = [r for r in rows if r[-3] is not None or r[-2] is not None]
        blob = rows[0][-3] if rows else None
        dim = len(blob) // 4 if blob is not None else (self._store.dim or 0)
        out = np.zeros((len(want), dim), np.float32)
        if rows:
            got = self.decode(rows, dim)
            got_ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            order = np.argsort(got_ids)
            sorted_ids = got_ids[order]
            pos = np.minimum(np.searchsorted(sorted_ids, want), len(sorted_ids) - 1)
            hit = sorted_ids[pos] == want
            out[hit] = got[order[pos[hit]]]
        return out

    def live(self, kind: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those of ``ids`` that exist now with ``kind``, ascending id."""
        rows: list[tuple] = []
        cols = self.columns()
        for chunk in chunks(np.unique(np.asarray(ids, np.int64)).tolist(), 500):
            marks = ",".join("?" * len(chunk))
            rows += self._store.conn.execute(
                f"SELECT id, {cols} FROM items WHERE kind = ? AND id IN ({marks}) ORDER BY id", [kind, *chunk]
            )
        return np.fromiter((r[0] for r in rows), np.int64, len(rows)), self.decode(rows)

    def sample(self, kind: str, n: int, with_ids: bool = False, seed: int | None = None) -> Any:
        """Up to ``n`` stored vectors of ``kind``, drawn at random (with their ids: ``with_ids``);
        with ``seed`` the same draw every time for the same ids (a multiplicative hash order)."""
        order = "random()" if seed is None else "((id + ?) * 2654435761) % 4294967291"
        args = (kind, n) if seed is None else (kind, int(seed), n)
        rows = self._store.conn.execute(
            f"SELECT id, {self.columns()} FROM items WHERE kind = ? ORDER BY {order} LIMIT ?", args
        ).fetchall()
        if with_ids:
            return np.fromiter((r[0] for r in rows), np.int64, len(rows)), self.decode(rows)
        return self.decode(rows)

    def to_store(
        self, vectors: np.ndarray, located: tuple[int, np.ndarray] | None = None
    ) -> list[StoredVector]:
        """(blob, vector file, row) to store for each vector: a float32 blob, or in large-library
        mode a row of a vector file (``located``, else a new file written and fsynced now, before
        the caller's transaction commits)."""
        if located is not None:
            fid, rows = located
            return [(None, int(fid), int(r)) for r in rows]
        if self._files.large_mode and len(vectors):
            fid = self._files.write(vectors)
            return [(None, fid, r) for r in range(len(vectors))]
        return [(v.tobytes(), None, None) for v in vectors]
