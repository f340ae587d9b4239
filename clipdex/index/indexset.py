"""The library's FAISS files (``images.faiss``, ``texts.faiss``), kept in line with the store.

Each file records the store generation it reflects. ``get`` hands out the cached index, else the
file, else (missing, unreadable, stale, or grown past what it was trained on) a rebuild from
SQLite, which it saves for the next reader.
"""

from __future__ import annotations

from pathlib import Path

from clipdex.index.store import IMAGE, TEXT, Store
from clipdex.index.vectors import VectorIndex

INDEX_TYPE_KEY = "index_type"
TUNE_QUERIES = 200


class IndexSet:
    """One VectorIndex per kind ("image", "text") for a library folder."""

    def __init__(self, folder: Path, store: Store):
        self.folder = folder
        self.store = store
        self._cache: dict[str, VectorIndex] = {}

    def path(self, kind: str) -> Path:
        return self.folder / f"{kind}s.faiss"

    @property
    def index_type(self) -> str:
        """The forced FAISS type (``--index-type``), or ``auto``: chosen from size and memory."""
        return self.store.get_meta(INDEX_TYPE_KEY) or "auto"

    def set_index_type(self, index_type: str) -> None:
        """Record a new index type; the indexes are rebuilt with it on next use."""
        if index_type != self.index_type:
            self.store.set_meta(INDEX_TYPE_KEY, None if index_type == "auto" else index_type)
            self._cache.clear()
            for kind in (IMAGE, TEXT):
                self.path(kind).unlink(missing_ok=True)

    def get(self, kind: str) -> VectorIndex:
        gen = self.store.generation
        idx = self._cache.get(kind)
        if idx is not None and idx.generation == gen:
            return idx
        idx = VectorIndex.load(self.path(kind))
        if idx is None or idx.generation != gen or idx.dim != (self.store.dim or 0) or idx.stale():
            with self.store.snapshot():  # ids, vectors and generation from one consistent state
                gen = self.store.generation
                ids, vecs = self.store.vectors(kind)
            idx = self.build(kind, ids, vecs, gen)
        self._cache[kind] = idx
        return idx

    def build(self, kind: str, ids, vecs, generation: int) -> VectorIndex:
        """Build from arrays the caller already holds (saves re-reading SQLite), cache and save it."""
        # Text->image queries sit further from the images than image->image ones do, so an image
        # index is tuned on stored texts when there are enough of them.
        tune = self.store.sample_vectors(TEXT, TUNE_QUERIES) if kind == IMAGE else None
        tune = tune if tune is not None and len(tune) >= TUNE_QUERIES // 2 else None
        idx = VectorIndex.build(ids, vecs, self.store.dim or 0, generation, self.index_type, tune)
        self._cache[kind] = idx
        self._try_save(kind, idx)
        return idx

    def forget(self, kind: str | None = None) -> None:
        if kind is None:
            self._cache.clear()
        else:
            self._cache.pop(kind, None)

    def save_all(self) -> None:
        for kind, idx in self._cache.items():
            self._try_save(kind, idx)

    def _try_save(self, kind: str, idx: VectorIndex) -> None:
        # Derived data: saved only if it still reflects the database, and a failure is harmless.
        if idx.generation == self.store.generation:
            try:
                idx.save(self.path(kind))
            except OSError:
                pass
