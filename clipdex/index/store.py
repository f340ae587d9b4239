"""The SQLite store: the library's source of truth (items, paths, captions, vectors, model, schema).

Ids are SQLite row ids (AUTOINCREMENT: never reused) and double as FAISS ids. Paths are stored as
the raw ``os.fsencode`` bytes so names that are not valid UTF-8 survive losslessly. Every change to
the vectors bumps ``generation``; FAISS files record the generation they reflect.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
import sqlite_utils

from clipdex.errors import ClipdexError
from clipdex.index.lock import WriterLock, read_only_error

DB_NAME = "clipdex.db"
IMAGE, TEXT = "image", "text"
PAGE_SIZE = 32768  # for new databases
MMAP_BYTES = 1 << 40  # address space only: SQLite maps what the file holds


def _m1_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE items (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('image', 'text')),
            source TEXT NOT NULL,          -- scan | sidecar | add-texts | import
            path BLOB,                     -- image file (os.fsencode bytes); for a sidecar: the .txt
            mtime_ns INTEGER,
            size INTEGER,
            text TEXT,
            image_id INTEGER REFERENCES items(id),  -- caption -> its image
            vector BLOB,                   -- float32, L2-normalised
            added_at REAL NOT NULL
        )"""
    )
    db["items"].create_index(["kind", "path"])
    db["items"].create_index(["image_id"])


def _m2_pending(db: sqlite_utils.Database) -> None:
    # New-model vectors written during a re-embedding; swapped in only when complete, so
    # searches keep working on the old vectors and an interrupted run resumes.
    db.execute("CREATE TABLE pending_vectors (id INTEGER PRIMARY KEY, vector BLOB NOT NULL)")


def _m3_identity(db: sqlite_utils.Database) -> None:
    # content_hash: size-independent fingerprint of a scanned file (first/last blocks), so a moved
    # file is recognised and keeps its id. failures: files that failed to decode, not retried until
    # they change. The text index makes "is this exact text already stored?" a lookup, not a scan.
    if "content_hash" not in {c.name for c in db["items"].columns}:
        db.execute("ALTER TABLE items ADD COLUMN content_hash BLOB")
    db.execute(
        """CREATE TABLE IF NOT EXISTS failures (
            path BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER, error TEXT NOT NULL,
            failed_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS items_kind_text ON items (kind, text)")


def _m4_photo_meta(db: sqlite_utils.Database) -> None:
    # When a photo was taken (unix seconds: EXIF DateTimeOriginal, else the file's mtime) and the
    # decoded image's size (after EXIF rotation), read at index time: date filters, duplicates.
    # Rows indexed before this column existed get their file's mtime; their EXIF date and size
    # come with their next re-index (size is read from the file header when needed meanwhile).
    columns = {c.name for c in db["items"].columns}
    for name, sql_type in (("taken_at", "REAL"), ("width", "INTEGER"), ("height", "INTEGER")):
        if name not in columns:
            db.execute(f"ALTER TABLE items ADD COLUMN {name} {sql_type}")
    db.execute(
        "UPDATE items SET taken_at = mtime_ns / 1e9"
        " WHERE kind = 'image' AND taken_at IS NULL AND mtime_ns IS NOT NULL"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_items_kind_taken_at ON items (kind, taken_at)")


def _m5_change_log(db: sqlite_utils.Database) -> None:
    # What each generation added and removed, written in the same transaction as the data, so a
    # reader holding a FAISS file of an older generation catches up without a rebuild. Runs of
    # consecutive ids are one row (an import of 1M rows is a handful). An update is a remove and an
    # add of the same id. The log is complete for generations above meta `changes_since_<kind>`.
    db.execute(
        """CREATE TABLE IF NOT EXISTS changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            generation INTEGER NOT NULL,
            kind TEXT NOT NULL,
            op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
            first_id INTEGER NOT NULL,
            last_id INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS changes_kind_generation ON changes (kind, generation)")
    gen = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    for kind in (IMAGE, TEXT):
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
            (f"changes_since_{kind}", gen[0] if gen else "0"),
        )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m1_initial,
    _m2_pending,
    _m3_identity,
    _m4_photo_meta,
    _m5_change_log,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class Item:
    """One stored item, as search results need it."""

    id: int
    kind: str
    path: bytes | None
    text: str | None
    image_id: int | None
    source: str


@dataclass(frozen=True, slots=True)
class PhotoMeta:
    """What indexing learns about a photo besides its vector: when it was taken (unix seconds)
    and the decoded image's width and height (after EXIF rotation)."""

    taken_at: float | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the scanner compares against: stat of a stored file."""

    id: int
    mtime_ns: int | None  # None for an imported item (no file seen yet)
    size: int | None
    source: str = "scan"
    content_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class Caption:
    """A sidecar caption as stored: its id, the .txt it came from, and its text."""

    id: int
    path: bytes
    mtime_ns: int
    size: int
    text: str


@dataclass(frozen=True, slots=True)
class Merged:
    """What `Store.merge_keyed` did with one chunk of keyed rows (row numbers index the chunk)."""

    new_ids: np.ndarray
    new_rows: np.ndarray
    updated_ids: np.ndarray
    updated_rows: np.ndarray
    unchanged: int


class Store:
    """Thin typed layer over the library's SQLite database.

    Opened for reading unless ``write`` (default: ``create``): a reader opens the file read-only
    (``immutable`` when the folder cannot be written: a read-only mount or a backup copy), sets no
    pragma and migrates nothing; an older schema is read as it is. `make_writable` switches to a
    read-write connection (WAL) and migrates, under the writer lock.
    """

    def __init__(self, library_dir: Path, create: bool = False, write: bool | None = None):
        self.folder = Path(library_dir)
        self.path = self.folder / DB_NAME
        self.writable = False
        self._txn_gen: int | None = None
        if not self.path.exists():
            if not create:
                raise ClipdexError(f"no library at {library_dir} (run `clipdex index FOLDER` to create one)")
            self._create()
        if create if write is None else write:
            self._open_write()
        else:
            self._open_read()

    # ---- opening ------------------------------------------------------------------------
    def _create(self) -> None:
        """A new database, made aside and renamed into place: a crash never leaves a half-made one."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise read_only_error(self.folder) from None
        except OSError as e:
            if e.errno == 30:  # EROFS
                raise read_only_error(self.folder) from None
            raise
        with WriterLock(self.folder):
            if self.path.exists():
                return
            # Half-made databases of creators killed before their rename (they held this lock, so
            # none is still being written): removed, with their -wal/-shm files.
            for stale in self.folder.glob(f".{DB_NAME}.new-*"):
                stale.unlink(missing_ok=True)
            tmp = self.folder / f".{DB_NAME}.new-{os.getpid()}"
            conn = sqlite3.connect(str(tmp), isolation_level=None)
            # A 512-d float32 row is ~2.1 KB: with 4 KB pages only one fits per page (half the file is
            # slack); 32 KB pages hold 15. Only settable before the file has content.
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            self.conn, self.db = conn, sqlite_utils.Database(conn)
            self._migrate()
            conn.close()
            os.replace(tmp, self.path)

    def _connect(self, uri: str) -> None:
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
        # Read pages through a memory map: a search's re-rank reads ~20 random rows of a multi-GB
        # file, 3x faster mapped than through read() calls (bench/search.py, 1M items).
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        self.conn, self.db = conn, sqlite_utils.Database(conn)

    def _uri(self, mode: str) -> str:
        from urllib.parse import quote

        return f"file:{quote(str(self.path.absolute()))}?{mode}"

    def _open_read(self) -> None:
        self._check_not_empty()
        folder_writable = os.access(self.folder, os.W_OK)
        try:
            self._connect(self._uri("mode=ro" if folder_writable else "immutable=1"))
        except sqlite3.Error as e:
            raise self.damaged(e) from None
        self.schema_version = self._read_schema_version()

    def _open_write(self) -> None:
        if not (os.access(self.folder, os.W_OK) and os.access(self.path, os.W_OK)):
            raise read_only_error(self.folder)
        self._check_not_empty()
        try:
            self._connect(self._uri("mode=rw"))
            self.conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(f"PRAGMA journal_size_limit={64 << 20}")  # shrink the WAL after big writes
            self.conn.execute("PRAGMA foreign_keys=OFF")
            version = self._read_schema_version()
        except sqlite3.OperationalError as e:
            if "readonly" in str(e) or "read-only" in str(e):
                raise read_only_error(self.folder) from None
            raise self.damaged(e) from None
        except sqlite3.DatabaseError as e:
            raise self.damaged(e) from None
        if version < SCHEMA_VERSION:
            with WriterLock(self.folder):  # two processes upgrading one library: one at a time
                self._migrate()
        self.schema_version = SCHEMA_VERSION
        self.writable = True

    def make_writable(self) -> None:
        """Reopen read-write (migrating an older schema); the caller holds the writer lock."""
        if not self.writable:
            self.conn.close()
            self._open_write()

    def _check_not_empty(self) -> None:
        try:
            empty = self.path.stat().st_size == 0
        except OSError as e:
            raise self.damaged(e.strerror or e) from None
        if empty:
            raise self.damaged("the file is empty")

    def damaged(self, reason: object) -> ClipdexError:
        return ClipdexError(
            f"{self.path} is not a clipdex database or is damaged: {reason} "
            "(restore it from a backup, or move it aside to start a new library)"
        )

    def _read_schema_version(self) -> int:
        try:
            if "meta" not in self.db.table_names():  # a new database is made whole (see _create)
                raise self.damaged("it has no clipdex tables")
            version = int(self.get_meta("schema_version") or 0)
        except sqlite3.DatabaseError as e:
            raise self.damaged(e) from None
        if version > SCHEMA_VERSION:
            raise ClipdexError(
                f"library schema version {version} is newer than this clipdex supports; upgrade clipdex"
            )
        return version

    # ---- schema -------------------------------------------------------------------------
    def require_schema(self, version: int, feature: str) -> None:
        """For a reader of an older library (never migrated by readers): a feature needing a newer
        table or column says how to upgrade instead of failing on a missing column."""
        if self.schema_version < version:
            raise ClipdexError(
                f"{feature} needs a newer library format (version {version}; this library is at "
                f"{self.schema_version}): run `clipdex check --repair` to upgrade"
            )

    def _migrate(self) -> None:
        """Bring the schema up to date; the caller holds the writer lock (or owns a new file)."""
        if "meta" not in self.db.table_names():
            self.db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        version = int(self.get_meta("schema_version") or 0)  # re-read: another writer may have upgraded
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                migration(self.db)
                self.set_meta("schema_version", str(number))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.conn.in_transaction:  # nested: the outer one commits
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._txn_gen = None
        try:
            yield
        except BaseException:
            self._txn_gen = None
            self.conn.execute("ROLLBACK")
            raise
        self._txn_gen = None
        self.conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: reads inside see one consistent state (WAL snapshot)."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    # ---- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def bump_generation(self) -> int:
        """The generation of the current write transaction (bumped once per transaction)."""
        if self._txn_gen is not None and self.conn.in_transaction:
            return self._txn_gen
        gen = self.generation + 1
        self.set_meta("generation", str(gen))
        if self.conn.in_transaction:
            self._txn_gen = gen
        return gen

    # ---- change log (readers catch up from it; see _m3_change_log) ----------------------
    def _log(self, op: str, kinds_ids: Iterable[tuple[str, int]]) -> None:
        """Record ``op`` of these (kind, id)s in this transaction's generation. Every write method
        that adds, removes or changes a vector calls this (an update: "remove" then "add")."""
        by_kind: dict[str, list[int]] = {}
        for kind, i in kinds_ids:
            by_kind.setdefault(kind, []).append(int(i))
        if not by_kind:
            return
        gen = self.bump_generation()
        rows = [
            (gen, kind, op, first, last)
            for kind, ids in by_kind.items()
            for first, last in _runs(sorted(ids))
        ]
        self.conn.executemany(
            "INSERT INTO changes (generation, kind, op, first_id, last_id) VALUES (?, ?, ?, ?, ?)", rows
        )

    def changes_since(self, kind: str) -> int | None:
        """The log holds every change of ``kind`` after this generation (None: no log, old schema)."""
        value = self.get_meta(f"changes_since_{kind}")
        return int(value) if value is not None else None

    def changes(self, kind: str, after: int, upto: int) -> list[tuple[str, int, int]]:
        """(op, first id, last id) of ``kind`` in generations (after, upto], in the order written."""
        return self.conn.execute(
            "SELECT op, first_id, last_id FROM changes WHERE kind = ? AND generation > ?"
            " AND generation <= ? ORDER BY seq",
            (kind, after, upto),
        ).fetchall()

    def prune_changes(self, kind: str, upto: int) -> None:
        """Forget ``kind``'s changes up to generation ``upto`` (its FAISS file is saved at ``upto``)."""
        with self.transaction():
            since = self.changes_since(kind) or 0
            if upto > since:
                self.conn.execute("DELETE FROM changes WHERE kind = ? AND generation <= ?", (kind, upto))
                self.set_meta(f"changes_since_{kind}", str(upto))

    def live_vectors(self, kind: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those of ``ids`` that exist now with ``kind``, ascending id."""
        out_ids: list[int] = []
        blobs: list[bytes] = []
        for chunk in _chunks(np.unique(np.asarray(ids, np.int64)).tolist(), 500):
            marks = ",".join("?" * len(chunk))
            for i, blob in self.conn.execute(
                f"SELECT id, vector FROM items WHERE kind = ? AND id IN ({marks}) ORDER BY id",
                [kind, *chunk],
            ):
                out_ids.append(i)
                blobs.append(blob)
        dim = self.dim or 0
        vecs = np.frombuffer(b"".join(blobs), np.float32).reshape(len(out_ids), dim)
        return np.asarray(out_ids, np.int64), vecs

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
            for i in range(n):
                meta = photos[i] or PhotoMeta()
                taken = meta.taken_at
                if taken is None and kind == IMAGE and stats[i][0] is not None:
                    taken = stats[i][0] / 1e9
                cur = self.conn.execute(
                    "INSERT INTO items (kind, source, path, mtime_ns, size, text, image_id, vector,"
                    " added_at, taken_at, width, height) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (kind, source, paths[i], stats[i][0], stats[i][1], texts[i], image_ids[i],
                     vectors[i].tobytes(), now, taken, meta.width, meta.height),
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
    ) -> np.ndarray:
        """Bulk insert (no stat, no links): one executemany; returns the new ids (consecutive).

        Ids are given explicitly, continuing the AUTOINCREMENT sequence, so they are known without
        one round trip per row; the transaction (taken here unless the caller holds one) keeps other
        writers out meanwhile.
        """
        n = len(vectors)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        for name, seq in (("paths", paths), ("texts", texts)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{n} vectors but {len(seq)} {name}")
        if n == 0:
            return np.empty(0, np.int64)
        row_bytes = vectors.shape[1] * 4
        flat = memoryview(vectors).cast("B")
        blobs = (flat[i * row_bytes : (i + 1) * row_bytes] for i in range(n))
        with self.transaction():
            seq = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
            top = self.conn.execute("SELECT max(id) FROM items").fetchone()[0]
            first = max(seq[0] if seq else 0, top or 0) + 1
            ids = np.arange(first, first + n, dtype=np.int64)
            self.conn.executemany(
                "INSERT INTO items (id, kind, source, path, text, vector, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                zip(
                    ids.tolist(), repeat(kind), repeat(source),
                    paths if paths is not None else repeat(None),
                    texts if texts is not None else repeat(None),
                    blobs, repeat(time.time()),
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
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                kinds.update(self.conn.execute(
                    f"SELECT id, kind FROM items WHERE id IN ({marks}) OR image_id IN ({marks})", chunk * 2
                ))  # fmt: skip
            captions = [i for i in kinds if i not in set(ids)]
            gone = ids + captions
            for chunk in _chunks(gone, 500):
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
    ) -> None:
        """Replace the vectors of existing items in place (their ids stay), with their new file facts.

        Every change of a stored vector goes through here, `insert`/`insert_many` or `delete`.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        cols: dict[str, Sequence] = {"vector": [v.tobytes() for v in vectors]}
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
            self._update_columns(ids, cols, source)
            kinds = []
            for chunk in _chunks([int(i) for i in ids], 500):
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

    def merge_keyed(self, kind: str, source: str, keys: Sequence, vectors: np.ndarray) -> Merged:
        """Upsert rows keyed by image path (bytes) or exact text (non-sidecar texts).

        A known key with an equal vector is unchanged, with another vector it is updated in place
        (same id); an unknown key is inserted. A key repeated within one run (see `begin_merge`)
        counts once: the first row wins, later ones are unchanged. Set-based SQL through a
        temporary table: no per-row round trips, so a million-row import stays fast.
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
            # min(): SQLite takes the bare column (vector) from the row holding the minimum id.
            matched = c.execute(
                f"SELECT m.row, min(i.id), i.vector FROM temp.merge_rows m JOIN items i"
                f" ON i.kind = ? AND i.{column} = m.key{sidecar} GROUP BY m.row",
                (kind,),
            ).fetchall()
            changed = sorted((r, i) for r, i, blob in matched if blob != vectors[r].tobytes())
            updated_rows = np.array([r for r, _ in changed], np.int64)
            updated_ids = np.array([i for _, i in changed], np.int64)
            if changed:
                self.update_vectors(updated_ids.tolist(), vectors[updated_rows])
            fresh = sorted(rows - {r for r, _, _ in matched})
            new_rows = np.array(fresh, np.int64)
            fresh_keys = [keys[r] for r in fresh]
            new_ids = self.insert_many(
                kind, source, vectors[new_rows],
                paths=fresh_keys if kind == "image" else None, texts=fresh_keys if kind != "image" else None,
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

    # ---- reads --------------------------------------------------------------------------
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
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT id, kind, path, text, image_id, source FROM items WHERE id IN ({marks})", chunk
            ):
                path = bytes(row[2]) if row[2] is not None else None
                out[row[0]] = Item(row[0], row[1], path, row[3], row[4], row[5])
        return out

    def vectors(self, kind: str, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of one kind, ascending id; read in chunks to bound peak memory."""
        dim = self.dim or 0
        total = self.conn.execute("SELECT count(*) FROM items WHERE kind = ?", (kind,)).fetchone()[0]
        ids = np.empty(total, np.int64)
        vecs = np.empty((total, dim), np.float32)
        n = 0
        cur = self.conn.execute("SELECT id, vector FROM items WHERE kind = ? ORDER BY id", (kind,))
        while rows := cur.fetchmany(batch):
            for i, blob in rows:
                ids[n] = i
                vecs[n] = np.frombuffer(blob, np.float32)
                n += 1
        return ids[:n], vecs[:n]

    def get_vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored vectors for ``ids`` in the given order (exact re-ranking reads these)."""
        # One indexed query per 500 ids and one buffer join: no per-row Python work beyond the fetch
        # (this runs on every search). Ids without a stored vector get zeros.
        want = np.asarray(ids, np.int64).reshape(-1)
        got_ids: list[int] = []
        blobs: list[bytes] = []
        for chunk in _chunks(want.tolist(), 500):
            marks = ",".join("?" * len(chunk))
            for i, blob in self.conn.execute(f"SELECT id, vector FROM items WHERE id IN ({marks})", chunk):
                if blob is not None:
                    got_ids.append(i)
                    blobs.append(blob)
        dim = len(blobs[0]) // 4 if blobs else (self.dim or 0)
        out = np.zeros((len(want), dim), np.float32)
        if blobs:
            got = np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), dim)
            order = np.argsort(got_ids)
            sorted_ids = np.asarray(got_ids, np.int64)[order]
            pos = np.minimum(np.searchsorted(sorted_ids, want), len(sorted_ids) - 1)
            hit = sorted_ids[pos] == want
            out[hit] = got[order[pos[hit]]]
        return out

    def sample_vectors(self, kind: str, n: int) -> np.ndarray:
        """Up to ``n`` stored vectors of ``kind``, drawn at random."""
        rows = self.conn.execute(
            "SELECT vector FROM items WHERE kind = ? ORDER BY random() LIMIT ?", (kind, n)
        ).fetchall()
        dim = self.dim or 0
        return np.array([np.frombuffer(r[0], np.float32) for r in rows], np.float32).reshape(-1, dim)

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
            missing = self._select_ids(
                "SELECT id FROM items WHERE id NOT IN (SELECT id FROM pending_vectors)", []
            )
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
        return missing

    def clear_pending(self) -> None:
        self.conn.execute("DELETE FROM pending_vectors")

    def _select_ids(self, sql: str, ids: list[int]) -> list[int]:
        if "{}" not in sql:
            return [r[0] for r in self.conn.execute(sql)]
        out: list[int] = []
        for chunk in _chunks(ids, 500):
            out += [r[0] for r in self.conn.execute(sql.format(",".join("?" * len(chunk))), chunk)]
        return out


def _runs(ids: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted ids as (first, last) runs of consecutive values."""
    if not ids:
        return
    first = last = ids[0]
    for i in ids[1:]:
        if i == last + 1:
            last = i
        elif i != last:
            yield first, last
            first = last = i
    yield first, last


def _chunks(seq: list, size: int) -> Iterator[list]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
