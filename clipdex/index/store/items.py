"""`Store`'s reads: items, vectors, files, captions, counts, and remembered decode failures."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from clipdex.index.records import Caption, FileRecord, Item
from clipdex.index.sqlrows import chunks

ITEM_COLS = "id, kind, path, text, image_id, source"  # an Item record's columns (`_item`)


def _item(row: Sequence) -> Item:
    return Item(row[0], row[1], bytes(row[2]) if row[2] is not None else None, row[3], row[4], row[5])


class Reads:
    """`Store`'s read methods (mixed into `Store`)."""

    conn: sqlite3.Connection

    def scanned_files(self) -> dict[bytes, FileRecord]:
        """Every scanned image, by path, in one query (no per-file round trips)."""
        rows = self.conn.execute(
            "SELECT path, id, mtime_ns, size FROM items WHERE kind = 'image' AND source = 'scan'"
        )
        return {bytes(p): FileRecord(i, m, s) for p, i, m, s in rows}

    def image_files(self) -> dict[bytes, FileRecord]:
        """Every image with a path (scanned or imported), by path; the lowest id wins a duplicate."""
        rows = self.conn.execute(
            "SELECT path, id, mtime_ns, size, source, content_hash FROM items"
            " WHERE kind = 'image' AND path IS NOT NULL ORDER BY id DESC"
        )
        return {bytes(p): FileRecord(i, m, s, src, h) for p, i, m, s, src, h in rows}

    def sidecars(self) -> dict[int, Caption]:
        """image id -> its sidecar caption."""
        rows = self.conn.execute(
            "SELECT image_id, id, path, mtime_ns, size, text FROM items WHERE source = 'sidecar'"
        )
        return {img: Caption(tid, bytes(p), m, s, t) for img, tid, p, m, s, t in rows}

    def items(self, ids: Sequence[int]) -> dict[int, Item]:
        out: dict[int, Item] = {}
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT {ITEM_COLS} FROM items WHERE id IN ({marks})", chunk):
                out[row[0]] = _item(row)
        return out

    def _vector_cols(self) -> str:
        """The columns holding a vector: the blob, and in large-library mode a shard file row."""
        return "vector, vfile, vrow" if self.has_vector_files() else "vector, NULL, NULL"

    def _decode(self, rows: list[tuple], dim: int | None = None) -> np.ndarray:
        """float32 vectors of (…, blob, vfile, vrow) rows: the blob, else the shard file's row."""
        dim = dim or self.dim or 0
        out = np.zeros((len(rows), dim), np.float32)
        blob_at = [n for n, r in enumerate(rows) if r[-3] is not None]
        if blob_at:
            joined = b"".join(rows[n][-3] for n in blob_at)
            out[blob_at] = np.frombuffer(joined, np.float32).reshape(len(blob_at), -1)
        if len(blob_at) < len(rows):
            shard_at = [n for n, r in enumerate(rows) if r[-3] is None and r[-2] is not None]
            if shard_at:
                files = np.fromiter((rows[n][-2] for n in shard_at), np.int64, len(shard_at))
                offsets = np.fromiter((rows[n][-1] for n in shard_at), np.int64, len(shard_at))
                out[shard_at] = self.shard_rows(files, offsets)
        return out

    def iter_vectors(self, kind: str, batch: int = 262_144) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) of one kind by chunks of ``batch``, ascending id (bounded memory)."""
        cur = self.conn.execute(
            f"SELECT id, {self._vector_cols()} FROM items WHERE kind = ? ORDER BY id", (kind,)
        )
        while rows := cur.fetchmany(batch):
            yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), self._decode(rows)

    def vectors(self, kind: str, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of one kind, ascending id; read in chunks to bound peak memory."""
        dim = self.dim or 0
        total = self.conn.execute("SELECT count(*) FROM items WHERE kind = ?", (kind,)).fetchone()[0]
        ids = np.empty(total, np.int64)
        vecs = np.empty((total, dim), np.float32)
        n = 0
        for chunk_ids, chunk in self.iter_vectors(kind, batch):
            ids[n : n + len(chunk_ids)] = chunk_ids
            vecs[n : n + len(chunk_ids)] = chunk
            n += len(chunk_ids)
        return ids[:n], vecs[:n]

    def get_vectors(
        self, ids: Sequence[int] | np.ndarray, items: dict[int, Item] | None = None
    ) -> np.ndarray:
        """Stored vectors for ``ids`` in the given order (exact re-ranking reads these); with
        ``items``, their rows' Item records go there too (a search's results are among the
        candidates it re-ranks: one query serves both)."""
        # One indexed query per 500 ids and one buffer join: no per-row Python work beyond the fetch
        # (this runs on every search), and no other query (each costs ~0.1 ms with cold caches).
        # Ids without a stored vector get zeros.
        want = np.asarray(ids, np.int64).reshape(-1)
        rows: list[tuple] = []
        cols = f"{ITEM_COLS if items is not None else 'id'}, {self._vector_cols()}"
        for chunk in chunks(want.tolist(), 500):
            marks = ",".join("?" * len(chunk))
            rows += self.conn.execute(f"SELECT {cols} FROM items WHERE id IN ({marks})", chunk)
        if items is not None:
            items.update((r[0], _item(r)) for r in rows)
        rows = [r for r in rows if r[-3] is not None or r[-2] is not None]
        blob = rows[0][-3] if rows else None
        dim = len(blob) // 4 if blob is not None else (self.dim or 0)
        out = np.zeros((len(want), dim), np.float32)
        if rows:
            got = self._decode(rows, dim)
            got_ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            order = np.argsort(got_ids)
            sorted_ids = got_ids[order]
            pos = np.minimum(np.searchsorted(sorted_ids, want), len(sorted_ids) - 1)
            hit = sorted_ids[pos] == want
            out[hit] = got[order[pos[hit]]]
        return out

    def live_vectors(self, kind: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those of ``ids`` that exist now with ``kind``, ascending id."""
        rows: list[tuple] = []
        cols = self._vector_cols()
        for chunk in chunks(np.unique(np.asarray(ids, np.int64)).tolist(), 500):
            marks = ",".join("?" * len(chunk))
            rows += self.conn.execute(
                f"SELECT id, {cols} FROM items WHERE kind = ? AND id IN ({marks}) ORDER BY id", [kind, *chunk]
            )
        return np.fromiter((r[0] for r in rows), np.int64, len(rows)), self._decode(rows)

    def sample_vectors(self, kind: str, n: int, with_ids: bool = False, seed: int | None = None) -> Any:
        """Up to ``n`` stored vectors of ``kind``, drawn at random (with their ids: ``with_ids``);
        with ``seed`` the same draw every time for the same ids (a multiplicative hash order)."""
        order = "random()" if seed is None else "((id + ?) * 2654435761) % 4294967291"
        args = (kind, n) if seed is None else (kind, int(seed), n)
        rows = self.conn.execute(
            f"SELECT id, {self._vector_cols()} FROM items WHERE kind = ? ORDER BY {order} LIMIT ?", args
        ).fetchall()
        if with_ids:
            return np.fromiter((r[0] for r in rows), np.int64, len(rows)), self._decode(rows)
        return self._decode(rows)

    def item_record(self, item_id: int) -> dict | None:
        """One item's stored fields (no vector) as a dict, or None; for detail views."""
        row = self.conn.execute(
            "SELECT id, kind, source, path, mtime_ns, size, text, image_id FROM items WHERE id = ?",
            (int(item_id),),
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "kind", "source", "path", "mtime_ns", "size", "text", "image_id")
        rec = dict(zip(keys, row))
        rec["path"] = bytes(rec["path"]) if rec["path"] is not None else None
        return rec

    def image_id_by_path(self, path: bytes) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM items WHERE kind = 'image' AND path = ? ORDER BY id LIMIT 1", (path,)
        ).fetchone()
        return row[0] if row else None

    def captions_of(self, image_id: int) -> list[tuple[int, str]]:
        """(id, text) of the texts linked to an image, ascending id."""
        rows = self.conn.execute(
            "SELECT id, text FROM items WHERE kind = 'text' AND image_id = ? ORDER BY id", (int(image_id),)
        )
        return [(i, t) for i, t in rows]

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self.conn.execute("SELECT count(*) FROM items").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM items WHERE kind = ?", (kind,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT kind, source, count(*) FROM items GROUP BY kind, source")
        out = {"images": 0, "texts": 0}
        for kind, source, n in rows:
            out[kind + "s"] += n
            out[f"{kind}s_{source}".replace("-", "_")] = n
        return out

    def iter_items(self, kind: str) -> Iterator[tuple[int, bytes | None, str | None]]:
        """(id, path, text) of every item of a kind, ascending id."""
        for i, p, t in self.conn.execute(
            "SELECT id, path, text FROM items WHERE kind = ? ORDER BY id", (kind,)
        ):
            yield i, (bytes(p) if p is not None else None), t

    def caption_pairs(self) -> list[tuple[bytes, str]]:
        """(image path, caption) for every caption linked to an image with a path."""
        rows = self.conn.execute(
            "SELECT i.path, t.text FROM items t JOIN items i ON t.image_id = i.id"
            " WHERE t.kind = 'text' AND i.path IS NOT NULL AND t.text != '' ORDER BY t.id"
        )
        return [(bytes(p), t) for p, t in rows]

    def has_columns(self, table: str, *names: str) -> bool:
        """Whether ``table`` has every column in ``names`` (an older schema may lack new ones)."""
        have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
        return set(names) <= have

    @property
    def dim(self) -> int | None:
        value = self.get_meta("dim")
        return int(value) if value else None

    # ---- failures (files that failed to decode) -------------------------------------------
    def failures(self) -> dict[bytes, tuple[int, int]]:
        """path -> (size, mtime_ns) of every remembered decode failure."""
        rows = self.conn.execute("SELECT path, size, mtime_ns FROM failures")
        return {bytes(p): (z, m) for p, z, m in rows}

    def record_failures(self, rows: Sequence[tuple[bytes, int, int, str]]) -> None:
        """Remember (path, size, mtime_ns, error) of files that failed to decode."""
        now = time.time()
        with self.transaction():
            self.conn.executemany(
                "INSERT OR REPLACE INTO failures (path, size, mtime_ns, error, failed_at)"
                " VALUES (?, ?, ?, ?, ?)",
                ((p, z, m, e, now) for p, z, m, e in rows),
            )

    def forget_failures(self, paths: Iterable[bytes]) -> None:
        with self.transaction():
            self.conn.executemany("DELETE FROM failures WHERE path = ?", ((p,) for p in paths))

    def count_failures(self) -> int:
        try:
            return self.conn.execute("SELECT count(*) FROM failures").fetchone()[0]
        except sqlite3.OperationalError:  # an older schema, read without migrating
            return 0
