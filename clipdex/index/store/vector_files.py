"""Large-library mode's vector storage: float16 rows of immutable .npy files in ``LIBRARY/vectors/``.

In this mode an item has no vector blob; it names a row of a file (``items.vfile``, ``items.vrow``;
the files are listed in ``vector_files``). A file is written (or an imported shard hard-linked,
else copied) and fsynced *before* the transaction that references it, and never rewritten: a crash
leaves at worst an unreferenced file (`clipdex check --repair` deletes it), never a half-written
row. Removals only drop the items; their rows become garbage in the file.

Reads go through cached read-only memory maps and come back as float32, renormalised: scores in
this mode are cosines of the float16 vectors.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.index.durable import fsync_dir, write_atomically

if TYPE_CHECKING:
    from clipdex.index.store.database import Store

SHARDS_DIR = "vectors"
STORAGE_KEY = "vector_storage"  # meta: "shards" once the library is in large-library mode
CONVERT_CHUNK = 1_000_000  # rows per file when blobs move into shard files


class VectorFileError(ClipdexError):
    """A vector file is missing or damaged: the vectors in it are lost."""


class VectorFiles:
    """The ``vector_files`` table and the files it lists in ``LIBRARY/vectors/`` (with the meta
    key saying whether the library is in large-library mode)."""

    def __init__(self, store: Store):
        self._store = store
        self._maps: dict[int, np.ndarray] = {}
        self._has_cols: bool | None = None

    # ---- mode ---------------------------------------------------------------------------
    @property
    def large_mode(self) -> bool:
        """Whether new vectors go to vector files (large-library mode) rather than blobs."""
        return self._store.meta.get(STORAGE_KEY) == "shards"

    @property
    def folder(self) -> Path:
        return self._store.folder / SHARDS_DIR

    def available(self) -> bool:
        """Whether this database can reference vector files (an older schema, read as is, cannot)."""
        # Only a yes is kept: a reader of an older schema looks again (a writer may migrate meanwhile).
        if not self._has_cols:
            self._has_cols = self._store.has_columns("items", "vfile", "vrow")
        return bool(self._has_cols)

    # ---- reading ------------------------------------------------------------------------
    def _map(self, file_id: int) -> np.ndarray:
        arr = self._maps.get(file_id)
        if arr is None:
            row = self._store.conn.execute(
                "SELECT name, rows, dim, size FROM vector_files WHERE id = ?", (int(file_id),)
            ).fetchone()
            if row is None:
                raise VectorFileError(f"vector file #{file_id} is not listed in the database")
            arr = open_vector_file(self.folder / row[0], row[1], row[2], row[3])
            self._maps[file_id] = arr
        return arr

    def read(self, files: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32 unit vectors of (file id, row) pairs, in the given order."""
        files = np.asarray(files, np.int64)
        rows = np.asarray(rows, np.int64)
        arrays = {int(fid): self._map(int(fid)) for fid in np.unique(files)}
        dim = next(iter(arrays.values())).shape[1] if arrays else self._store.dim or 0
        out = np.empty((len(rows), dim), np.float32)
        for fid, arr in arrays.items():
            where = np.flatnonzero(files == fid)
            want = rows[where]
            order = np.argsort(want, kind="stable")  # ascending offsets: sequential page reads
            out[where[order]] = arr[want[order]]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def forget_maps(self) -> None:
        """Drop the cached memory maps and column probe (the connection was reopened)."""
        self._maps = {}
        self._has_cols = None

    # ---- writing ------------------------------------------------------------------------
    def write(self, vectors: np.ndarray) -> int:
        """Write ``vectors`` as a new float16 file, fsynced, and list it (in the caller's
        transaction, which then references its rows); returns its file id."""
        half = np.ascontiguousarray(vectors, dtype=np.float16)
        name = _new_name()
        write_atomically(self.folder / name, lambda f: np.save(f, half, allow_pickle=False))
        return self._list(name, half.shape[0], half.shape[1])

    def link(self, source: str | os.PathLike, chunk: int = 262_144) -> int:
        """Bring an imported (N, D) array into ``vectors/``: hard-linked when it is native float16
        on the same file system, else copied (converted to float16 by chunks); returns its id.
        The user's file is never moved or changed."""
        src = np.load(source, mmap_mode="r", allow_pickle=False)
        name = _new_name()
        path = self.folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        if src.dtype == np.float16 and src.dtype.isnative and _plain_npy(source):
            try:
                os.link(source, path)
            except OSError:  # another file system, or links not allowed: a copy
                write_atomically(path, lambda f: _copy_file(source, f))
            else:
                fsync_dir(self.folder)
        else:

            def convert(f) -> None:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f2", "fortran_order": False, "shape": src.shape}
                )
                for start in range(0, src.shape[0], chunk):
                    # Unit rows before the cast: float16 overflows past 65504 and flushes tiny
                    # components to zero, where the user's un-normalised rows may lie.
                    block = src[start : start + chunk].astype(np.float32)  # a copy: src is mapped
                    block /= np.linalg.norm(block, axis=1, keepdims=True)
                    f.write(block.astype("<f2").tobytes())

            write_atomically(path, convert)
        return self._list(name, src.shape[0], src.shape[1])

    def _list(self, name: str, rows: int, dim: int) -> int:
        path = self.folder / name
        cur = self._store.conn.execute(
            "INSERT INTO vector_files (name, rows, dim, size, fingerprint, added_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, int(rows), int(dim), path.stat().st_size, fingerprint(path), time.time()),
        )
        return int(cur.lastrowid)

    def drop_unused(self, file_ids: list[int] | None = None) -> list[str]:
        """Unlist and delete vector files no item references (of ``file_ids``, or all); returns
        their names. Called after a commit: an import whose rows were all unchanged leaves none."""
        conn = self._store.conn
        used = {f for (f,) in conn.execute("SELECT DISTINCT vfile FROM items WHERE vfile IS NOT NULL")}
        rows = [(i, n) for i, n in conn.execute("SELECT id, name FROM vector_files") if i not in used]
        if file_ids is not None:
            wanted = set(file_ids)
            rows = [(i, n) for i, n in rows if i in wanted]
        if not rows:
            return []
        with self._store.transaction():
            conn.executemany("DELETE FROM vector_files WHERE id = ?", [(i,) for i, _ in rows])
        for i, name in rows:
            self._maps.pop(i, None)
            (self.folder / name).unlink(missing_ok=True)
        return [n for _, n in rows]

    def orphans(self) -> list[str]:
        """Names of the files in ``vectors/`` that no listed vector file names (a write that
        crashed or rolled back before its commit), sorted."""
        if not self.folder.is_dir():
            return []
        listed = {name for _, name, *_ in self.listed()}
        return sorted(p.name for p in self.folder.iterdir() if p.name not in listed)

    def remove_orphans(self) -> list[str]:
        """Delete the `orphans` (the writer holds the lock, so none is being written); returns
        their names."""
        gone = self.orphans()
        for name in gone:
            (self.folder / name).unlink(missing_ok=True)
        return gone

    def enter_large_mode(self) -> int:
        """Switch to vector-file storage, moving every vector blob into float16 files (a file and
        a transaction per CONVERT_CHUNK rows: an interrupted switch resumes); returns rows moved."""
        store, moved = self._store, 0
        with store.transaction():
            store.meta.set(STORAGE_KEY, "shards")
        while True:
            rows = store.conn.execute(
                "SELECT id, vector FROM items WHERE vector IS NOT NULL ORDER BY id LIMIT ?", (CONVERT_CHUNK,)
            ).fetchall()
            if not rows:
                return moved
            vecs = np.frombuffer(b"".join(b for _, b in rows), np.float32).reshape(len(rows), -1)
            with store.transaction():
                fid = self.write(vecs)
                store.conn.executemany(
                    "UPDATE items SET vector = NULL, vfile = ?, vrow = ? WHERE id = ?",
                    ((fid, n, i) for n, (i, _) in enumerate(rows)),
                )
            moved += len(rows)

    def listed(self) -> list[tuple[int, str, int, int, int]]:
        """(id, name, rows, dim, size) of every listed vector file."""
        return [row[:5] for row in self.listed_with_fingerprints()]

    def listed_with_fingerprints(self) -> list[tuple[int, str, int, int, int, bytes | None]]:
        """(id, name, rows, dim, size, fingerprint) of every listed vector file."""
        if not self._store.has_table("vector_files"):  # an older schema, read as it is
            return []
        return self._store.conn.execute(
            "SELECT id, name, rows, dim, size, fingerprint FROM vector_files ORDER BY id"
        ).fetchall()


def open_vector_file(path: Path, rows: int, dim: int, size: int) -> np.ndarray:
    """The (rows, dim) float16 array of a listed file, memory-mapped; VectorFileError when the
    file is missing or is not what was listed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise VectorFileError(
            f"vector file {path} is missing: the vectors stored in it are lost (`clipdex check` "
            "names the items; `clipdex index --reembed` re-creates images that still have their files)"
        ) from None
    if st.st_size != size:
        raise VectorFileError(f"vector file {path} is damaged ({st.st_size} bytes, expected {size})")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise VectorFileError(f"vector file {path} is damaged ({e})") from None
    if arr.shape != (rows, dim) or arr.dtype != np.float16:
        raise VectorFileError(f"vector file {path} is damaged (holds {arr.dtype} {arr.shape})")
    return arr


def fingerprint(path: Path, span: int = 1 << 20) -> bytes:
    """A hash of a file's size and its first and last MiB: `check` tells a file changed since it
    was listed (e.g. a hard-linked shard that its owner rewrote in place) without reading it all."""
    import hashlib

    size = path.stat().st_size
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(span))
        if size > span:
            f.seek(max(span, size - span))
            h.update(f.read(span))
    return h.digest()


def _new_name() -> str:
    return f"{uuid.uuid4().hex[:16]}.npy"


def _plain_npy(path: str | os.PathLike) -> bool:
    """A regular file (linking a symlink would link the link)."""
    return Path(path).is_file() and not Path(path).is_symlink()


def _copy_file(source: str | os.PathLike, f) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, f, 1 << 22)
