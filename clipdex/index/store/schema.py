"""The library database's schema: its file name, item kinds and the migrations that build it.

Each migration is one self-contained step; ``schema_version`` in ``meta`` counts those applied.
A new migration is appended to `MIGRATIONS` (never edit an old one: libraries out there ran it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clipdex.kinds import IMAGE, TEXT

if TYPE_CHECKING:
    import sqlite_utils

DB_NAME = "clipdex.db"
PAGE_SIZE = 32768  # for new databases


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


def _m6_vector_files(db: sqlite_utils.Database) -> None:
    # Large-library mode: vectors live as float16 rows of immutable .npy files in LIBRARY/vectors/
    # (an imported shard hard-linked or copied, or a file written per commit), not as blobs. An
    # item whose `vector` is NULL is row `vrow` of file `vfile`; a row no item points at is garbage.
    db.execute(
        """CREATE TABLE IF NOT EXISTS vector_files (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,      -- file name in LIBRARY/vectors/
            rows INTEGER NOT NULL,
            dim INTEGER NOT NULL,
            size INTEGER NOT NULL,          -- bytes: a file of another size is damaged
            fingerprint BLOB,               -- hash of its size, first and last MiB (`check`)
            added_at REAL NOT NULL
        )"""
    )
    columns = {c.name for c in db["items"].columns}
    for name in ("vfile", "vrow"):
        if name not in columns:
            db.execute(f"ALTER TABLE items ADD COLUMN {name} INTEGER")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m1_initial,
    _m2_pending,
    _m3_identity,
    _m4_photo_meta,
    _m5_change_log,
    _m6_vector_files,
]
SCHEMA_VERSION = len(MIGRATIONS)
