"""`Store`'s writes: inserts, deletes, in-place updates, keyed merges and the re-embedding swap.

Identity lives here: an update keeps the item's id (logged as a removal and an add), and
`merge_keyed` matches rows by image path or exact text.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat

import numpy as np

from clipdex.index.records import Merged, PhotoMeta
from clipdex.index.schema import IMAGE
from clipdex.index.sqlrows import chunks

# A unit vector kept as float16 differs from its float32 source by at most ~2.5e-4 a component; a
# re-imported vector within this of the stored one is the same vector (unchanged, not updated).
FLOAT16_TOLERANCE = 2e-3


class Writes:
    """`Store`'s write methods (mixed into `Store`); each takes the transaction it needs."""

    conn: sqlite3.Connection

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
    ) -> list[int]:
        """Insert ``len(vectors)`` items; returns their new ids in order.

        ``photos`` gives each image's date and size (see `PhotoMeta`); without one an image with a
        stat is dated by its mtime."""
        n = len(vectors)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        now = time.time()
        paths = paths or [None] * n
        stats = stats or [(None, None)] * n
        texts = texts or [None] * n
        image_ids = image_ids or [None] * n
        photos = photos or [None] * n
        ids = []
        with self.transaction():
            stored = self._vector_values(vectors)
            for i in range(n):
                meta = photos[i] or PhotoMeta()
                taken = meta.taken_at
                if taken is None and kind == IMAGE and stats[i][0] is not None:
                    taken = stats[i][0] / 1e9
                cur = self.conn.execute(
                    "INSERT INTO items (kind, source, path, mtime_ns, size, text, image_id, vector, vfile,"
                    " vrow, added_at, taken_at, width, height)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (kind, source, paths[i], stats[i][0], stats[i][1], texts[i], image_ids[i],
                     *stored[i], now, taken, meta.width, meta.height),
                )  # fmt: skip
                ids.append(int(cur.lastrowid))
            self._log("add", zip(repeat(kind), ids))
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
        with self.transaction():
            if located is None and not self.large_mode:
                row_bytes = vectors.shape[1] * 4
                flat = memoryview(vectors).cast("B")
                stored = ((flat[i * row_bytes : (i + 1) * row_bytes], None, None) for i in range(n))
            else:
                stored = iter(self._vector_values(vectors, located))
            seq = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
            top = self.conn.execute("SELECT max(id) FROM items").fetchone()[0]
            first = max(seq[0] if seq else 0, top or 0) + 1
            ids = np.arange(first, first + n, dtype=np.int64)
            self.conn.executemany(
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
            self._log("add", zip(repeat(kind), ids.tolist()))
        return ids

    @contextmanager
    def bulk_load(self, cache_mib: int = 256) -> Iterator[None]:
        """Settings for a big write: a larger page cache (fewer spills mid-transaction); WAL stays."""
        old = self.conn.execute("PRAGMA cache_size").fetchone()[0]
        self.conn.execute(f"PRAGMA cache_size={-cache_mib * 1024}")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA cache_size={old}")
            try:  # hand the WAL's pages to the database file now and truncate it
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:
                pass

    def delete(self, ids: Iterable[int]) -> list[int]:
        """Delete items and the captions linked to deleted images; returns every deleted id."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        with self.transaction():
            kinds: dict[int, str] = {}
            for chunk in chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                kinds.update(self.conn.execute(
                    f"SELECT id, kind FROM items WHERE id IN ({marks}) OR image_id IN ({marks})", chunk * 2
                ))  # fmt: skip
            asked = set(ids)
            captions = [i for i in kinds if i not in asked]
            gone = ids + captions
            for chunk in chunks(gone, 500):
                marks = ",".join("?" * len(chunk))
                self.conn.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
                self.conn.execute(f"DELETE FROM pending_vectors WHERE id IN ({marks})", chunk)
            self._log("remove", ((k, i) for i, k in kinds.items()))
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

        Every change of a stored vector goes through here, `insert`/`insert_many` or `delete`.
        ``located`` as in `insert_many`.
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
        with self.transaction():
            stored = self._vector_values(vectors, located)
            for n, name in enumerate(("vector", "vfile", "vrow")):
                cols[name] = [v[n] for v in stored]
            self._update_columns(ids, cols, source)
            kinds = []
            for chunk in chunks([int(i) for i in ids], 500):
                marks = ",".join("?" * len(chunk))
                kinds += self.conn.execute(f"SELECT kind, id FROM items WHERE id IN ({marks})", chunk)
            self._log("remove", kinds)  # an update is a removal and an add of the same id
            self._log("add", kinds)

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
        with self.transaction():
            self._update_columns(ids, self._file_columns(paths, stats, hashes), source)

    def _vector_values(
        self, vectors: np.ndarray, located: tuple[int, np.ndarray] | None = None
    ) -> list[tuple[bytes | None, int | None, int | None]]:
        """(blob, vector file, row) to store for each vector: a float32 blob, or in large-library
        mode a row of a vector file (``located``, else a new file written and fsynced now, before
        the caller's transaction commits)."""
        if located is not None:
            fid, rows = located
            return [(None, int(fid), int(r)) for r in rows]
        if self.large_mode and len(vectors):
            fid = self.write_vector_file(vectors)
            return [(None, fid, r) for r in range(len(vectors))]
        return [(v.tobytes(), None, None) for v in vectors]

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
        self.conn.executemany(f"UPDATE items SET {', '.join(sets)} WHERE id = ?", rows)

    def merge_keyed(
        self, kind: str, source: str, keys: Sequence, vectors: np.ndarray,
        located: tuple[int, np.ndarray] | None = None,
    ) -> Merged:  # fmt: skip
        """Upsert rows keyed by image path (bytes) or exact text (non-sidecar texts).

        A known key with an equal vector is unchanged, with another vector it is updated in place
        (same id); an unknown key is inserted. ``located``: (vector file id, the file row of each
        of ``vectors``) when they already sit in a vector file (large-library mode); a vector kept
        there as float16 counts as equal within FLOAT16_TOLERANCE. A key repeated within one run
        (see `merging`) counts once: the first row wins, later ones are unchanged. Set-based SQL
        through a temporary table: no per-row round trips, so a million-row import stays fast.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(vectors)
        column = "path" if kind == "image" else "text"
        sidecar = "" if kind == "image" else " AND i.source != 'sidecar'"
        with self.transaction():
            c = self.conn
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
                f" ON i.kind = ? AND i.{column} = m.key{sidecar} GROUP BY m.row",
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
                diff = np.abs(self.shard_rows(pairs[:, 2], pairs[:, 3]) - vectors[pairs[:, 0]]).max(axis=1)
                changed += [(int(r), int(i)) for r, i, _, _ in pairs[diff > FLOAT16_TOLERANCE]]
            changed.sort()
            updated_rows = np.array([r for r, _ in changed], np.int64)
            updated_ids = np.array([i for _, i in changed], np.int64)

            def at(rows: np.ndarray) -> tuple[int, np.ndarray] | None:
                return None if located is None else (located[0], np.asarray(located[1])[rows])

            if changed:
                self.update_vectors(updated_ids.tolist(), vectors[updated_rows], located=at(updated_rows))
            fresh = sorted(rows - {r for r, *_ in matched})
            new_rows = np.array(fresh, np.int64)
            fresh_keys = [keys[r] for r in fresh]
            new_ids = self.insert_many(
                kind, source, vectors[new_rows],
                paths=fresh_keys if kind == "image" else None, texts=fresh_keys if kind != "image" else None,
                located=at(new_rows),
            ) if fresh else np.empty(0, np.int64)  # fmt: skip
        return Merged(new_ids, new_rows, updated_ids, updated_rows, n - len(fresh) - len(changed))

    @contextmanager
    def merging(self) -> Iterator[None]:
        """The temporary tables `merge_keyed` uses for one run (keys seen so far collapse)."""
        c = self.conn
        c.execute("CREATE TEMP TABLE IF NOT EXISTS merge_rows (key PRIMARY KEY, row INTEGER)")
        c.execute("CREATE TEMP TABLE IF NOT EXISTS merge_seen (key PRIMARY KEY)")
        try:
            yield
        finally:
            c.execute("DROP TABLE IF EXISTS temp.merge_rows")
            c.execute("DROP TABLE IF EXISTS temp.merge_seen")

    def known_texts(self, texts: Sequence[str]) -> set[str]:
        """Which of ``texts`` are already stored as non-sidecar texts (exact content)."""
        c = self.conn
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

    # ---- pending (re-embedding) ---------------------------------------------------------
    def pending_ids(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT id FROM pending_vectors")}

    def put_pending(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.transaction():
            self.conn.executemany(
                "INSERT OR REPLACE INTO pending_vectors (id, vector) VALUES (?, ?)",
                [(int(i), vectors[n].tobytes()) for n, i in enumerate(ids)],
            )

    def swap_in_pending(self) -> list[int]:
        """Replace every vector by its pending one (one transaction); delete items without one.

        Returns the ids of the items deleted for lack of a pending vector (the caller decides
        beforehand whether that is allowed); their linked captions go with them.
        """
        with self.transaction():
            unmatched = "SELECT id FROM items WHERE id NOT IN (SELECT id FROM pending_vectors)"
            missing = [i for (i,) in self.conn.execute(unmatched)]
            self.conn.execute(
                "UPDATE items SET vector = (SELECT vector FROM pending_vectors p WHERE p.id = items.id)"
                " WHERE id IN (SELECT id FROM pending_vectors)"
            )
            changed = self.conn.execute(
                "SELECT kind, id FROM items WHERE id IN (SELECT id FROM pending_vectors)"
            ).fetchall()
            self._log("remove", changed)  # an update: remove + add of the same id
            self._log("add", changed)
            if missing:
                self.delete(missing)
            self.conn.execute("DELETE FROM pending_vectors")
            if self.large_mode:  # the new vectors came as blobs: into vector files, like all others
                self.enter_large_mode()
        return missing

    def clear_pending(self) -> None:
        self.conn.execute("DELETE FROM pending_vectors")
