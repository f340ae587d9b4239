"""The ``items`` table: the images and texts, their files and captions, and the writes that keep
item identity (an update keeps the id and is logged as a removal and an add).

The items' vectors are read through `ItemVectors` (``store.vectors``); keyed upserts of imports
are `KeyedMerge` (``store.merge``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

from clipdex.index.store.batches import chunks
from clipdex.index.store.rows import Caption, FileRecord, Item, PhotoMeta
from clipdex.index.store.scope import rows_at
from clipdex.kinds import IMAGE

if TYPE_CHECKING:
    from clipdex.index.store.changes import ChangeLog
    from clipdex.index.store.database import Store
    from clipdex.index.store.item_vectors import ItemVectors
    from clipdex.index.store.vector_files import VectorFiles

ITEM_COLS = "id, kind, path, text, image_id, source"  # an Item record's columns (`item_of_row`)
SPAN_COLS = ", t, t_end"  # and a video frame's span, on a schema that has it (`item_cols`)
VIDEO = "video"  # the source of a video's frame items


def item_cols(store: Store) -> str:
    """The columns of an Item record in this store's schema (an older one has no spans)."""
    return ITEM_COLS + (SPAN_COLS if store.has_columns("items", "t", "t_end") else ", NULL, NULL")


def item_of_row(row: Sequence) -> Item:
    """The `Item` of a row selecting `item_cols` first."""
    path = bytes(row[2]) if row[2] is not None else None
    return Item(row[0], row[1], path, row[3], row[4], row[5], row[6], row[7])


class ItemsTable:
    """Reads and writes of ``items``; each write takes the transaction it needs and logs what it
    changes in ``changes``."""

    def __init__(self, store: Store, changes: ChangeLog, vectors: ItemVectors, files: VectorFiles):
        self._store = store
        self._changes = changes
        self._vectors = vectors
        self._files = files

    # ---- reads --------------------------------------------------------------------------
    def image_files(
        self, paths: Sequence[bytes] | None = None, folders: Sequence[bytes] = ()
    ) -> dict[bytes, FileRecord]:
        """Every image with a path (scanned or imported), by path; the lowest id wins a duplicate.
        With ``paths``: only those paths and the images under ``folders``."""
        select = (  # a video's moments are not image files (clipdex.index.store.frames reads them)
            "SELECT path, id, mtime_ns, size, source, content_hash FROM items"
            " WHERE kind = 'image' AND source != 'video' AND"
        )
        if paths is None:
            rows = self._store.conn.execute(f"{select} path IS NOT NULL ORDER BY id DESC")
        else:
            rows = sorted(rows_at(self._store.conn, select, paths, folders), key=lambda r: -r[1])
        return {bytes(p): FileRecord(i, m, s, src, h) for p, i, m, s, src, h in rows}

    def sidecars(self, image_ids: Sequence[int] | None = None) -> dict[int, Caption]:
        """image id -> its sidecar caption (of ``image_ids`` only, when given)."""
        select = "SELECT image_id, id, path, mtime_ns, size, text FROM items WHERE source = 'sidecar'"
        if image_ids is None:
            rows = list(self._store.conn.execute(select))
        else:
            rows = []
            for chunk in chunks(sorted({int(i) for i in image_ids}), 500):
                marks = ",".join("?" * len(chunk))
                rows += self._store.conn.execute(f"{select} AND image_id IN ({marks})", chunk)
        return {img: Caption(tid, bytes(p), m, s, t) for img, tid, p, m, s, t in rows}

    def get(self, ids: Sequence[int]) -> dict[int, Item]:
        """id -> Item of those of ``ids`` that exist."""
        out: dict[int, Item] = {}
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for row in self._store.conn.execute(
                f"SELECT {item_cols(self._store)} FROM items WHERE id IN ({marks})", chunk
            ):
                out[row[0]] = item_of_row(row)
        return out

    def record(self, item_id: int) -> dict | None:
        """One item's stored fields (no vector) as a dict, or None; for detail views."""
        spans = "t, t_end" if self._store.has_columns("items", "t", "t_end") else "NULL, NULL"
        row = self._store.conn.execute(
            f"SELECT id, kind, source, path, mtime_ns, size, text, image_id, {spans} FROM items WHERE id = ?",
            (int(item_id),),
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "kind", "source", "path", "mtime_ns", "size", "text", "image_id", "t", "t_end")
        rec = dict(zip(keys, row))
        rec["path"] = bytes(rec["path"]) if rec["path"] is not None else None
        return rec

    def image_id_by_path(self, path: bytes) -> int | None:
        row = self._store.conn.execute(
            "SELECT id FROM items WHERE kind = 'image' AND path = ? ORDER BY id LIMIT 1", (path,)
        ).fetchone()
        return row[0] if row else None

    def captions_of(self, image_id: int) -> list[tuple[int, str]]:
        """(id, text) of the texts linked to an image, ascending id."""
        rows = self._store.conn.execute(
            "SELECT id, text FROM items WHERE kind = 'text' AND image_id = ? ORDER BY id", (int(image_id),)
        )
        return [(i, t) for i, t in rows]

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._store.conn.execute("SELECT count(*) FROM items").fetchone()[0]
        return self._store.conn.execute("SELECT count(*) FROM items WHERE kind = ?", (kind,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        rows = self._store.conn.execute("SELECT kind, source, count(*) FROM items GROUP BY kind, source")
        out = {"images": 0, "texts": 0}
        for kind, source, n in rows:
            out[kind + "s"] += n
            out[f"{kind}s_{source}".replace("-", "_")] = n
        return out

    def iter(self, kind: str) -> Iterator[tuple[int, bytes | None, str | None]]:
        """(id, path, text) of every item of a kind, ascending id."""
        for i, p, t in self._store.conn.execute(
            "SELECT id, path, text FROM items WHERE kind = ? ORDER BY id", (kind,)
        ):
            yield i, (bytes(p) if p is not None else None), t

    def caption_pairs(self) -> list[tuple[bytes, str]]:
        """(image path, caption) for every caption linked to an image with a path."""
        rows = self._store.conn.execute(
            "SELECT i.path, t.text FROM items t JOIN items i ON t.image_id = i.id"
            " WHERE t.kind = 'text' AND i.path IS NOT NULL AND t.text != '' ORDER BY t.id"
        )
        return [(bytes(p), t) for p, t in rows]

    def ids(self, kind: str) -> np.ndarray:
        """Ids of every item of ``kind``, ascending."""
        rows = self._store.conn.execute("SELECT id FROM items WHERE kind = ? ORDER BY id", (kind,))
        return np.fromiter((r[0] for r in rows), np.int64)

    def ids_in_vector_file(self, file_id: int) -> list[int]:
        """Ids of the items whose vectors are rows of vector file ``file_id``."""
        rows = self._store.conn.execute("SELECT id FROM items WHERE vfile = ?", (int(file_id),))
        return [i for (i,) in rows]

    def orphan_caption_ids(self) -> list[int]:
        """Ids of the texts linked to an image that no longer exists."""
        rows = self._store.conn.execute(
            "SELECT id FROM items WHERE kind = 'text' AND image_id IS NOT NULL"
            " AND image_id NOT IN (SELECT id FROM items WHERE kind = 'image')"
        )
        return [i for (i,) in rows]

    def sidecar_ids(self, ids: Sequence[int]) -> list[int]:
        """Those of ``ids`` that are sidecar captions."""
        out: list[int] = []
        for chunk in chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            rows = self._store.conn.execute(
                f"SELECT id FROM items WHERE source = 'sidecar' AND id IN ({marks})", chunk
            )
            out += [i for (i,) in rows]
        return out

    def photo_rows(self, ids: Sequence[int]) -> dict[int, tuple]:
        """id -> (path, size, width, height); width/height None on a schema without them."""
        cols = "width, height" if self._store.has_columns("items", "width", "height") else "NULL, NULL"
        out = {}
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for i, p, size, w, h in self._store.conn.execute(
                f"SELECT id, path, size, {cols} FROM items WHERE id IN ({marks})", chunk
            ):
                out[i] = (bytes(p) if p is not None else None, size, w, h)
        return out

    # ---- writes -------------------------------------------------------------------------
    def insert(
        self,
        kind: str,
        source: str,
        vectors: np.ndarray,
        *,
        paths: Sequence[bytes | None] | None = None,
        stats: Sequence[tuple[int, int] | tuple[None, None]] | None = None,
        texts: Sequence[str | None] | None = None,
        image_ids: Sequence[int | None] | None = None,
        photos: Sequence[PhotoMeta | None] | None = None,
        spans: Sequence[tuple[float, float]] | None = None,
        hashes: Sequence[bytes | None] | None = None,
        located: tuple[int, np.ndarray] | None = None,
    ) -> list[int]:
        """Insert ``len(vectors)`` items; returns their new ids in order.

        ``photos`` gives each image's date and size (see `PhotoMeta`); without one an image with a
        stat is dated by its mtime. ``spans``: each video frame's (t, t_end); ``hashes``: content
        hashes of the files; ``located`` as in `insert_many`."""
        n = len(vectors)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        now = time.time()
        paths = paths or [None] * n
        stats = stats or [(None, None)] * n
        texts = texts or [None] * n
        image_ids = image_ids or [None] * n
        photos = photos or [None] * n
        extra = (", t, t_end" if spans is not None else "") + (", content_hash" if hashes is not None else "")
        marks = ", ?" * ((2 if spans is not None else 0) + (1 if hashes is not None else 0))
        ids = []
        with self._store.transaction():
            stored = self._vectors.to_store(vectors, located)
            for i in range(n):
                meta = photos[i] or PhotoMeta()
                taken = meta.taken_at
                if taken is None and kind == IMAGE and stats[i][0] is not None:
                    taken = stats[i][0] / 1e9
                cur = self._store.conn.execute(
                    "INSERT INTO items (kind, source, path, mtime_ns, size, text, image_id, vector, vfile,"
                    f" vrow, added_at, taken_at, width, height{extra})"
                    f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?{marks})",
                    (kind, source, paths[i], stats[i][0], stats[i][1], texts[i], image_ids[i],
                     *stored[i], now, taken, meta.width, meta.height,
                     *(spans[i] if spans is not None else ()), *((hashes[i],) if hashes is not None else ())),
                )  # fmt: skip
                ids.append(int(cur.lastrowid))
            self._store.words.mark([*ids, *(i for i in image_ids if i is not None)])
            self._changes.log("add", zip(repeat(kind), ids))
        return ids

    def insert_many(
        self,
        kind: str,
        source: str,
        vectors: np.ndarray,
        paths: Sequence[bytes] | None = None,
        texts: Sequence[str] | None = None,
        located: tuple[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Bulk insert (no stat, no links): one executemany; returns the new ids (consecutive).

        Ids are given explicitly, continuing the AUTOINCREMENT sequence, so they are known without
        one round trip per row; the transaction (taken here unless the caller holds one) keeps other
        writers out meanwhile. ``located`` (large-library mode): (vector file id, its rows) already
        holding these vectors, e.g. an imported shard.
        """
        n = len(vectors)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        for name, seq in (("paths", paths), ("texts", texts)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{n} vectors but {len(seq)} {name}")
        if n == 0:
            return np.empty(0, np.int64)
        with self._store.transaction():
            if located is None and not self._files.large_mode:
                row_bytes = vectors.shape[1] * 4
                flat = memoryview(vectors).cast("B")
                stored = ((flat[i * row_bytes : (i + 1) * row_bytes], None, None) for i in range(n))
            else:
                stored = iter(self._vectors.to_store(vectors, located))
            seq = self._store.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
            top = self._store.conn.execute("SELECT max(id) FROM items").fetchone()[0]
            first = max(seq[0] if seq else 0, top or 0) + 1
            ids = np.arange(first, first + n, dtype=np.int64)
            self._store.conn.executemany(
                "INSERT INTO items (id, kind, source, path, text, vector, vfile, vrow, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (i, kind, source, p, t, *v, now)
                    for i, p, t, v, now in zip(
                        ids.tolist(),
                        paths if paths is not None else repeat(None),
                        texts if texts is not None else repeat(None),
                        stored, repeat(time.time()),
                    )
                ),
            )  # fmt: skip
            self._store.words.mark_range(first, first + n - 1)
            self._changes.log("add", zip(repeat(kind), ids.tolist()))
        return ids

    def delete(self, ids: Iterable[int]) -> list[int]:
        """Delete items and the captions linked to deleted images; returns every deleted id."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        with self._store.transaction():
            kinds: dict[int, str] = {}
            for chunk in chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                kinds.update(self._store.conn.execute(
                    f"SELECT id, kind FROM items WHERE id IN ({marks}) OR image_id IN ({marks})", chunk * 2
                ))  # fmt: skip
            asked = set(ids)
            captions = [i for i in kinds if i not in asked]
            gone = ids + captions
            for chunk in chunks(gone, 500):
                marks = ",".join("?" * len(chunk))
                self._store.conn.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
                self._store.conn.execute(f"DELETE FROM pending_vectors WHERE id IN ({marks})", chunk)
            self._changes.log("remove", ((k, i) for i, k in kinds.items()))
        return gone

    def update_vectors(
        self,
        ids: Sequence[int],
        vectors: np.ndarray,
        *,
        texts: Sequence[str] | None = None,
        paths: Sequence[bytes] | None = None,
        stats: Sequence[tuple[int, int]] | None = None,
        hashes: Sequence[bytes | None] | None = None,
        photos: Sequence[PhotoMeta | None] | None = None,
        source: str | None = None,
        located: tuple[int, np.ndarray] | None = None,
    ) -> None:
        """Replace the vectors of existing items in place (their ids stay), with their new file facts.

        ``located`` as in `insert_many`. Each write of a stored vector logs it in the change log:
        here, `insert`/`insert_many`, `delete`, `KeyedMerge.keyed` (through these),
        `PendingTable.swap_in` (an UPDATE of its own) and `VectorFiles.enter_large_mode` (which
        moves vectors into files unchanged, so it logs nothing).
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        cols: dict[str, Sequence] = {}
        if texts is not None:
            cols["text"] = texts
        cols.update(self._file_columns(paths, stats, hashes))
        if photos is not None:  # re-read with the new content: date (else mtime), size
            metas = [p or PhotoMeta() for p in photos]
            mtimes = [m for m, _ in stats] if stats is not None else [None] * len(metas)
            cols["taken_at"] = [
                p.taken_at if p.taken_at is not None else (m / 1e9 if m is not None else None)
                for p, m in zip(metas, mtimes)
            ]
            cols["width"] = [p.width for p in metas]
            cols["height"] = [p.height for p in metas]
        with self._store.transaction():
            stored = self._vectors.to_store(vectors, located)
            for n, name in enumerate(("vector", "vfile", "vrow")):
                cols[name] = [v[n] for v in stored]
            self._update_columns(ids, cols, source)
            kinds = []
            for chunk in chunks([int(i) for i in ids], 500):
                marks = ",".join("?" * len(chunk))
                kinds += self._store.conn.execute(f"SELECT kind, id FROM items WHERE id IN ({marks})", chunk)
            self._changes.log("remove", kinds)  # an update is a removal and an add of the same id
            self._changes.log("add", kinds)

    def update_files(
        self,
        ids: Sequence[int],
        *,
        paths: Sequence[bytes] | None = None,
        stats: Sequence[tuple[int, int]] | None = None,
        hashes: Sequence[bytes | None] | None = None,
        source: str | None = None,
    ) -> None:
        """New file facts (path, stat, content hash) for items whose vector stays: a move, a touch."""
        with self._store.transaction():
            self._update_columns(ids, self._file_columns(paths, stats, hashes), source)

    def unlink_from_images(self, ids: Sequence[int]) -> None:
        """Clear the image link of these texts (they stay, as free texts)."""
        with self._store.transaction():
            for chunk in chunks([int(i) for i in ids], 500):
                marks = ",".join("?" * len(chunk))
                self._store.conn.execute(f"UPDATE items SET image_id = NULL WHERE id IN ({marks})", chunk)

    @staticmethod
    def _file_columns(paths: Sequence | None, stats: Sequence | None, hashes: Sequence | None) -> dict:
        cols: dict[str, Sequence] = {}
        if paths is not None:
            cols["path"] = paths
        if stats is not None:
            cols["mtime_ns"] = [m for m, _ in stats]
            cols["size"] = [z for _, z in stats]
        if hashes is not None:
            cols["content_hash"] = hashes
        return cols

    def _update_columns(self, ids: Sequence[int], cols: dict[str, Sequence], source: str | None) -> None:
        names = list(cols)
        sets = [f"{c} = ?" for c in names] + (["source = ?"] if source is not None else [])
        if not ids or not sets:
            return
        extra = (source,) if source is not None else ()
        rows = ((*(cols[c][n] for c in names), *extra, int(i)) for n, i in enumerate(ids))
        self._store.conn.executemany(f"UPDATE items SET {', '.join(sets)} WHERE id = ?", rows)
