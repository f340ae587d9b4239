"""The library's FAISS files (``images.faiss``, ``texts.faiss``), kept in line with the store.

Each file records the store generation it reflects; the store's change log says what changed
since. Two ways in:

- `view` (readers: search, info, a long-lived Library) never writes. It memory-maps the file
  (opening costs no I/O; a search reads the pages it touches) and catches up from the log in
  memory; when the file is missing, damaged, of another dimension, or the log no longer reaches
  back to it, it searches exactly from SQLite (in memory, not saved) and warns once. Each call
  costs one generation read when nothing changed.
- `get` (writers, under the writer lock) folds the log into the index, or rebuilds it when it
  is missing, damaged or has outgrown its training; `apply` follows a run's commits, `save_all`
  and `maybe_save` write the files and prune the log behind them, `finish` (the end of a
  writing command) also repairs a file of the other kind that readers could not use.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clipdex.index.faiss import ondisk, ondisk_build
from clipdex.index.faiss.ann import NeedsRebuild
from clipdex.index.faiss.tuning import TUNE_QUERIES
from clipdex.index.faiss.vector_index import VectorIndex, stray_files
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE, TEXT

INDEX_TYPE_KEY = "index_type"
SAVE_SECONDS = 60.0  # a long writer run saves its FAISS files at least this often…
SAVE_COMMITS = 200  # …or after this many commits, whichever comes first
RELOAD_OVERLAY = 20_000  # a reader whose catch-up grew past this reloads a newer file

Warn = Callable[[str], None]


class IndexSet:
    """One VectorIndex per kind ("image", "text") for a library folder."""

    def __init__(self, folder: Path, store: Store, warn: Warn | None = None):
        self.folder = folder
        self.store = store
        self.warn = warn or (lambda message: None)
        self._cache: dict[str, VectorIndex] = {}
        self._file_stamp: dict[str, tuple[int, int] | None] = {}
        self._warned: set[str] = set()
        self._saved_at = time.monotonic()
        self._commits = 0

    def path(self, kind: str) -> Path:
        return self.folder / f"{kind}s.faiss"

    @property
    def index_type(self) -> str:
        """The forced FAISS type (``--index-type``), or ``auto``: chosen from size and memory."""
        return self.store.meta.get(INDEX_TYPE_KEY) or "auto"

    def set_index_type(self, index_type: str) -> None:
        """Record a new index type (writer); the indexes are rebuilt with it on next use."""
        if index_type != self.index_type:
            self.store.meta.set(INDEX_TYPE_KEY, None if index_type == "auto" else index_type)
            self._cache.clear()
            for kind in (IMAGE, TEXT):
                self.path(kind).unlink(missing_ok=True)

    # ---- readers ------------------------------------------------------------------------
    def view(self, kind: str, generation: int | None = None) -> VectorIndex:
        """The index of ``kind`` as of the store's current generation (``generation`` when the
        caller has just read it). Never writes anything."""
        gen = self.store.generation if generation is None else generation
        idx = self._cache.get(kind)
        if idx is not None and idx.generation == gen:
            return idx
        if idx is not None and idx.overlay_size > RELOAD_OVERLAY and self._file_changed(kind):
            idx = None  # a writer saved since: a fresh base beats a big in-memory catch-up
        if idx is not None and self._catch_up(idx, kind, fold=False):
            return idx
        idx, why = self._load(kind, mmap=True)
        if idx is not None and self._catch_up(idx, kind, fold=False):
            self._cache[kind] = idx
            return idx
        why = why or "older than the database's change log"
        return self._exact(kind, why)

    def problem(self, kind: str) -> str | None:
        """What `view` finds wrong with ``kind``'s file (``the image index PATH is damaged``), or
        None when it is usable or the store holds nothing of ``kind`` (as `view` warns)."""
        idx = self.view(kind)
        if idx.fallback_reason is None or idx.ntotal == 0:
            return None
        return self._problem_text(kind, idx.fallback_reason)

    def _problem_text(self, kind: str, why: str) -> str:
        return f"the {kind} index {self.path(kind)} is {why}"

    def _exact(self, kind: str, why: str) -> VectorIndex:
        with self.store.snapshot():  # ids, vectors and generation from one consistent state
            gen = self.store.generation
            ids, vecs = self.store.vectors.all(kind)
        if len(ids) and kind not in self._warned:
            self._warned.add(kind)
            self.warn(
                f"{self._problem_text(kind, why)}; searching exactly from the database "
                "(slower; the next `clipdex index` or `clipdex check --repair` rebuilds it)"
            )
        idx = VectorIndex.build(ids, vecs, self.store.dim or 0, gen, "flat")
        idx.exact_fallback = True
        idx.fallback_reason = why
        self._cache[kind] = idx
        return idx

    def _load(self, kind: str, mmap: bool = False) -> tuple[VectorIndex | None, str | None]:
        path = self.path(kind)
        self._file_stamp[kind] = _stamp(path)
        if not path.exists():
            return None, "missing"
        idx = VectorIndex.load(path, mmap=mmap)
        if idx is None:
            return None, "damaged"
        if idx.dim != (self.store.dim or 0):
            return None, f"of another model ({idx.dim}-d vectors; the library's are {self.store.dim}-d)"
        return idx, None

    def _file_changed(self, kind: str) -> bool:
        return _stamp(self.path(kind)) != self._file_stamp.get(kind)

    def _catch_up(self, idx: VectorIndex, kind: str, fold: bool) -> bool:
        """Apply the logged changes since ``idx.generation``; False when the log cannot."""
        with self.store.snapshot():
            gen = self.store.generation
            if idx.generation == gen:
                return True
            if idx.dim != (self.store.dim or 0):  # the model changed to one of another size
                return False
            if not _log_covers(idx.generation, self.store.changes.logged_since(kind), gen):
                return False
            ops = self.store.changes.between(kind, idx.generation, gen)
            idx.apply_changes(ops, lambda ids: self.store.vectors.live(kind, ids), gen, fold=fold)
        return True

    # ---- writers ------------------------------------------------------------------------
    def get(self, kind: str) -> VectorIndex:
        """The index of ``kind`` for a writer: up to date, folded, saved when it had to be rebuilt."""
        idx = self._cache.get(kind)
        if idx is None or idx.exact_fallback or idx.mapped:  # a reader's mapped view is read-only
            idx, _ = self._load(kind)
        try:
            if idx is not None and self._catch_up(idx, kind, fold=True) and not idx.stale():
                idx.fold()
                self._cache[kind] = idx
                return idx
        except NeedsRebuild:
            pass
        return self.rebuild(kind)

    def rebuild(self, kind: str, fill: ondisk_build.Fill | None = None) -> VectorIndex:
        """Build ``kind``'s index from the store (not from its file), cache and save it (``fill``:
        how an on-disk index's blocks are filled, e.g. in Ray tasks)."""
        self._cache.pop(kind, None)
        if ondisk_build.wanted(self.store, kind, self.index_type):  # large-library mode: bounded memory
            idx = ondisk_build.build(self.store, kind, self.path(kind), self.index_type, fill=fill)
            self._cache[kind] = idx
            self._try_save(kind, idx)
            return idx
        with self.store.snapshot():
            gen = self.store.generation
            ids, vecs = self.store.vectors.all(kind)
        return self.build(kind, ids, vecs, gen)

    def build(self, kind: str, ids, vecs, generation: int) -> VectorIndex:
        """Build from arrays the caller already holds (saves re-reading SQLite), cache and save it."""
        # Text->image queries sit further from the images than image->image ones do, so an image
        # index is tuned on stored texts when there are enough of them.
        tune = self.store.vectors.sample(TEXT, TUNE_QUERIES) if kind == IMAGE else None
        tune = tune if tune is not None and len(tune) >= TUNE_QUERIES // 2 else None
        idx = VectorIndex.build(ids, vecs, self.store.dim or 0, generation, self.index_type, tune)
        self._cache[kind] = idx
        self._try_save(kind, idx)
        return idx

    def apply(self, kind: str, added: tuple[list[int], np.ndarray] | None, removed: list[int]) -> None:
        """Follow one committed change of a writer's run (rebuilds when the index cannot)."""
        idx = self._cache[kind]
        try:
            idx.remove(removed)
            if added is not None:
                idx.add(*added)
            idx.generation = self.store.generation
        except NeedsRebuild:
            self._cache.pop(kind)
            self.get(kind)

    def maybe_save(self) -> None:
        """A commit point of a long run: save every SAVE_SECONDS or SAVE_COMMITS commits."""
        self._commits += 1
        if self._commits >= SAVE_COMMITS or time.monotonic() - self._saved_at >= SAVE_SECONDS:
            self.save_all()

    def forget(self, kind: str | None = None) -> None:
        if kind is None:
            self._cache.clear()
        else:
            self._cache.pop(kind, None)

    def save_all(self) -> None:
        """Save every up-to-date writer index (a writer's commit point); one that has outgrown
        its training (see VectorIndex.stale) is rebuilt first."""
        for kind, idx in list(self._cache.items()):
            if idx.exact_fallback:
                continue
            if self.store.writable and idx.generation == self.store.generation and idx.stale():
                self.rebuild(kind)  # from the store, and saves
            else:
                self._try_save(kind, idx)
        self._saved_at, self._commits = time.monotonic(), 0

    def finish(self) -> None:
        """The end of a writing command: save, and rebuild a file of another kind that readers
        cannot use (missing, unreadable, of another dimension, or older than the log reaches)."""
        self.save_all()
        for kind in (IMAGE, TEXT):
            if kind in self._cache or not self.store.writable:
                continue
            head = VectorIndex.read_header(self.path(kind))
            usable = (
                head is not None
                and head.get("dim") == self.store.dim
                and _log_covers(
                    head.get("generation", -1), self.store.changes.logged_since(kind), self.store.generation
                )
            )
            if not usable and (head is not None or self.store.items.count(kind)):
                self.get(kind)  # caught up or rebuilt, and saved
        if self.store.writable:  # what a killed writer left half-made (this one holds the lock)
            for kind in (IMAGE, TEXT):
                for stray in self.leftovers(self.folder, kind):
                    if stray.is_dir():  # an on-disk build's work folder
                        shutil.rmtree(stray, ignore_errors=True)
                    else:
                        stray.unlink(missing_ok=True)

    @staticmethod
    def leftovers(folder: Path, kind: str) -> list[Path]:
        """What a killed writer left of ``kind``'s index in ``folder`` (what `finish` removes): a
        save's temporary head and unnamed data files, an on-disk build's work folders."""
        return stray_files(folder / f"{kind}s.faiss") + ondisk.stray_builds(folder, kind)

    def _try_save(self, kind: str, idx: VectorIndex) -> None:
        # Derived data: saved only by a writer, only if it still reflects the database; a failure
        # is harmless (readers catch up from the log, the next writer saves again).
        if not self.store.writable or idx.generation != self.store.generation:
            return
        try:
            idx.save(self.path(kind))
        except OSError:
            return
        self._file_stamp[kind] = _stamp(self.path(kind))
        self.store.changes.prune(kind, idx.generation)
        ondisk.remove_unused(self.folder, kind, idx.ann)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino


def _log_covers(generation: int, since: int | None, current: int) -> bool:
    """Whether an index saved at ``generation`` can catch up to ``current`` from a change log that
    reaches back to ``since`` (None: no log)."""
    return generation == current or (since is not None and since <= generation <= current)
