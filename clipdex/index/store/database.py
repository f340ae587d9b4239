"""The SQLite store: the library's source of truth (items, paths, captions, vectors, model, schema).

Ids are SQLite row ids (AUTOINCREMENT: never reused) and double as FAISS ids. Paths are stored as
the raw ``os.fsencode`` bytes so names that are not valid UTF-8 survive losslessly. Every change to
the vectors bumps ``generation``; FAISS files record the generation they reflect.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from clipdex.errors import ClipdexError
from clipdex.index.store import schema
from clipdex.index.store.changes import ChangeLog
from clipdex.index.store.failures import FailuresTable
from clipdex.index.store.frame_merge import FrameMerge
from clipdex.index.store.frames import FramesTable
from clipdex.index.store.item_vectors import ItemVectors
from clipdex.index.store.items import ItemsTable
from clipdex.index.store.lock import WriterLock, read_only_error
from clipdex.index.store.merge import KeyedMerge
from clipdex.index.store.meta import MetaTable
from clipdex.index.store.pending import PendingTable
from clipdex.index.store.schema import DB_NAME, PAGE_SIZE
from clipdex.index.store.selection import Selection
from clipdex.index.store.texts import TextLinesTable
from clipdex.index.store.vector_files import VectorFiles
from clipdex.index.store.words import WordsTable

if TYPE_CHECKING:
    import sqlite_utils

MMAP_BYTES = 1 << 40  # address space only: SQLite maps what the file holds


class Store:
    """Thin typed layer over the library's SQLite database: the connection, its lifecycle, the
    transaction and the schema here; each table's reads and writes on one object, all sharing
    this connection and `transaction`:

    - ``meta``: the key/value settings (`MetaTable`);
    - ``items``: the images and texts (`ItemsTable`); ``vectors``: their stored vectors, blobs
      or vector-file rows (`ItemVectors`); ``merge``: keyed upserts of imports (`KeyedMerge`),
      ``frame_merge`` those of imported videos' frames (`FrameMerge`);
    - ``failures``: files that failed to decode; ``pending``: a re-embedding's new vectors;
    - ``changes``: the change log readers catch up from (`ChangeLog`);
    - ``vector_files``: large-library mode's float16 vector files (`VectorFiles`).

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
        self._db: sqlite_utils.Database | None = None
        self.meta = MetaTable(self)
        self.changes = ChangeLog(self)
        self.vector_files = VectorFiles(self)
        self.vectors = ItemVectors(self, self.vector_files)
        self.items = ItemsTable(self, self.changes, self.vectors, self.vector_files)
        self.merge = KeyedMerge(self, self.items, self.vector_files)
        self.frame_merge = FrameMerge(self, self.items, self.vector_files)
        self.failures = FailuresTable(self)
        self.frames = FramesTable(self)  # the video frames among the items
        self.selection = Selection(self)  # which items a Filter keeps
        self.pending = PendingTable(self, self.items, self.changes, self.vector_files)
        self.texts = TextLinesTable(self)
        self.words = WordsTable(self)
        self._has_words: bool | None = None  # whether the schema has the words table (cached)
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
            self.conn = conn
            self._migrate()
            conn.close()
            os.replace(tmp, self.path)

    def _connect(self, uri: str) -> None:
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
        # Read pages through a memory map: a search's re-rank reads ~20 random rows of a multi-GB
        # file, 3x faster mapped than through read() calls (bench/search.py, 1M items).
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        self.conn = conn
        self.vector_files.forget_maps()

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
        if version < schema.SCHEMA_VERSION:
            with WriterLock(self.folder):  # two processes upgrading one library: one at a time
                self._migrate()
        self.schema_version = schema.SCHEMA_VERSION
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

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, for the migrations. Imported on first use:
        it imports pandas when that is installed, ~0.2 s of every cold search otherwise."""
        if self._db is None or self._db.conn is not self.conn:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def _read_schema_version(self) -> int:
        try:
            has_meta = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
            if has_meta.fetchone() is None:  # a new database is made whole (see _create)
                raise self.damaged("it has no clipdex tables")
            version = int(self.meta.get("schema_version") or 0)
        except sqlite3.DatabaseError as e:
            raise self.damaged(e) from None
        if version > schema.SCHEMA_VERSION:
            raise ClipdexError(
                f"library schema version {version} is newer than this clipdex supports; upgrade clipdex"
            )
        return version

    # ---- schema -------------------------------------------------------------------------
    def require_schema(self, version: int, feature: str) -> None:
        """For a reader of an older library (never migrated by readers): a feature needing a newer
        table or column says how to upgrade instead of failing on a missing column."""
        # Kept though nothing calls it yet (decision D1): DESIGN's contract is that a feature
        # needing a newer column says "run `clipdex check --repair` to upgrade", and the coming
        # OCR and video columns call this; tests/e2e/test_readers.py pins its message.
        if self.schema_version < version:
            raise ClipdexError(
                f"{feature} needs a newer library format (version {version}; this library is at "
                f"{self.schema_version}): run `clipdex check --repair` to upgrade"
            )

    def _migrate(self) -> None:
        """Bring the schema up to date; the caller holds the writer lock (or owns a new file)."""
        if "meta" not in self.db.table_names():
            self.db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        version = int(self.meta.get("schema_version") or 0)  # re-read: another writer may have upgraded
        # Read through the module at call time: tests build an older schema by shortening it.
        for number, migration in enumerate(schema.MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                migration(self.db)
                self.meta.set("schema_version", str(number))
                self._has_words = None

    def has_columns(self, table: str, *names: str) -> bool:
        """Whether ``table`` has every column in ``names`` (an older schema may lack new ones)."""
        have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
        return set(names) <= have

    def has_table(self, name: str) -> bool:
        """Whether the database has table ``name`` (an older schema, read as it is, may not)."""
        found = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return found.fetchone() is not None

    def integrity_errors(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check`` findings: empty when the file is sound."""
        rows = [tuple(r) for r in self.conn.execute("PRAGMA integrity_check").fetchall()]
        return [] if rows == [("ok",)] else [str(r[0]) for r in rows]

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
        try:
            if self._words_kept():  # the word documents of what this transaction changed
                self.words.flush()
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _words_kept(self) -> bool:
        if self._has_words is None:
            self._has_words = self.has_table("words_dirty")
        return self._has_words

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

    # ---- generation and dimension (in meta) -----------------------------------------------
    @property
    def generation(self) -> int:
        return int(self.meta.get("generation") or 0)

    def bump_generation(self) -> int:
        """The generation of the current write transaction (bumped once per transaction)."""
        if self._txn_gen is not None and self.conn.in_transaction:
            return self._txn_gen
        gen = self.generation + 1
        self.meta.set("generation", str(gen))
        if self.conn.in_transaction:
            self._txn_gen = gen
        return gen

    @property
    def dim(self) -> int | None:
        """The stored vectors' dimension (the model's), None before the first model."""
        value = self.meta.get("dim")
        return int(value) if value else None
