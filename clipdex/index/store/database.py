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
from clipdex.index.change_log import ChangeLog
from clipdex.index.lock import WriterLock, read_only_error
from clipdex.index.records import Caption, FileRecord, Item, Merged, PhotoMeta
from clipdex.index.schema import DB_NAME, IMAGE, MIGRATIONS, PAGE_SIZE, SCHEMA_VERSION, TEXT
from clipdex.index.store_reads import Reads
from clipdex.index.store_writes import Writes
from clipdex.index.vector_shards import ShardVectors

if TYPE_CHECKING:
    import sqlite_utils

__all__ = [
    "DB_NAME", "IMAGE", "MIGRATIONS", "SCHEMA_VERSION", "TEXT",
    "Caption", "FileRecord", "Item", "Merged", "PhotoMeta", "Store",
]  # fmt: skip
MMAP_BYTES = 1 << 40  # address space only: SQLite maps what the file holds


class Store(ChangeLog, Writes, Reads, ShardVectors):
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
        self._db: sqlite_utils.Database | None = None
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
        self.forget_vector_maps()

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

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, for migrations and checks. Imported on first use:
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
