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


def _m7_text_and_words(db: sqlite_utils.Database) -> None:
    # Text found in pictures (OCR today; `source` leaves room for others): one row per line, in
    # reading order, with its box (four corners, each as a fraction of the picture's width and
    # height, so the box fits any rendering of it) and confidence. `text_reads` says which items a
    # source has read (with no row in `text_lines` when it found no text, an error when it failed),
    # so a run that was killed resumes where it stopped.
    db.execute(
        """CREATE TABLE IF NOT EXISTS text_lines (
            item_id INTEGER NOT NULL,
            source TEXT NOT NULL,
            ord INTEGER NOT NULL,
            text TEXT NOT NULL,
            box TEXT,                      -- JSON [[x, y] x 4], fractions of width and height
            confidence REAL,
            PRIMARY KEY (item_id, source, ord)
        )"""
    )
    db.execute(
        """CREATE TABLE IF NOT EXISTS text_reads (
            item_id INTEGER NOT NULL,
            source TEXT NOT NULL,
            error TEXT,
            read_at REAL NOT NULL,
            PRIMARY KEY (item_id, source)
        )"""
    )
    # Word search: one FTS5 document per item (rowid = item id) holding its file name, its
    # caption(s) (a text item: its own text) and the text read in it, in the searchable form of
    # `clipdex.index.store.words` (each CJK character its own token). Triggers note which items
    # changed in `words_dirty`; the store rewrites their documents before each commit, so the
    # words follow every write path (index, moves, deletes, imports, captions) in its transaction.
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS words USING fts5"
        "(name, caption, ocr, tokenize = 'unicode61 remove_diacritics 2')"
    )
    db.execute("CREATE TABLE IF NOT EXISTS words_dirty (id INTEGER PRIMARY KEY)")
    dirty = "INSERT OR IGNORE INTO words_dirty (id) SELECT value FROM (SELECT {} AS value)"
    dirty += " WHERE value IS NOT NULL"
    triggers = {
        "words_item_added": ("AFTER INSERT ON items", ["new.id", "new.image_id"]),
        "words_item_changed": ("AFTER UPDATE OF path, text, image_id ON items",
                               ["new.id", "old.image_id", "new.image_id"]),
        "words_item_removed": ("AFTER DELETE ON items", ["old.id", "old.image_id"]),
        "words_lines_added": ("AFTER INSERT ON text_lines", ["new.item_id"]),
        "words_lines_removed": ("AFTER DELETE ON text_lines", ["old.item_id"]),
    }  # fmt: skip
    for name, (when, ids) in triggers.items():
        body = " ".join(dirty.format(i) + ";" for i in ids)
        if name == "words_item_removed":  # an item's text goes with it
            body += " DELETE FROM text_lines WHERE item_id = old.id;"
            body += " DELETE FROM text_reads WHERE item_id = old.id;"
        db.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {when} BEGIN {body} END")
    db.execute("INSERT OR IGNORE INTO words_dirty (id) SELECT id FROM items")  # built at the next commit


def _m8_video_frames(db: sqlite_utils.Database) -> None:
    # Videos: each kept frame is an image item (source 'video', path = the video, its file facts
    # and content hash) standing for the span [t, t_end) seconds of it; consecutive frames that
    # look alike are one item whose span grew. Photos leave both NULL. The (source, path) index
    # lists a video's frames (a re-index replaces them all, a move re-points them all).
    columns = {c.name for c in db["items"].columns}
    for name in ("t", "t_end"):
        if name not in columns:
            db.execute(f"ALTER TABLE items ADD COLUMN {name} REAL")
    db.execute("CREATE INDEX IF NOT EXISTS items_source_path ON items (source, path)")


def _m9_words_marked_on_insert(db: sqlite_utils.Database) -> None:
    # Any AFTER INSERT trigger on items costs ~17 µs a row at this page size (a bulk import of 1M
    # rows: +17 s), so the two insert paths of `ItemsTable` mark new items dirty themselves (a
    # bulk insert in one statement over its id range). Updates and deletes keep their triggers.
    db.execute("DROP TRIGGER IF EXISTS words_item_added")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m1_initial,
    _m2_pending,
    _m3_identity,
    _m4_photo_meta,
    _m5_change_log,
    _m6_vector_files,
    _m7_text_and_words,
    _m8_video_frames,
    _m9_words_marked_on_insert,
]
SCHEMA_VERSION = len(MIGRATIONS)
