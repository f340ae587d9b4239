"""FAISS index files derived from the store: build, search, incremental update, atomic save.

A file records the database generation it reflects. A reader brings a loaded index up to date
with `apply_changes` in memory only: the loaded base is never modified; removed or replaced ids
become tombstones filtered at search and current vectors go to a small flat delta index. A writer
folds the same changes into the base (`fold=True`) before saving. Scores handed out are exact
cosine similarities of the stored float32 vectors, best first, ties broken by ascending id.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clipdex.index import ann
from clipdex.index.ann import AnnIndex

MAGIC = b"CLIPDEX-FAISS-3\n"  # 3: streamed ann.AnnIndex body (older files are rebuilt)


def _faiss() -> Any:
    import faiss

    return faiss


class VectorIndex:
    """An inner-product index over unit vectors, keyed by SQLite ids: an `ann.AnnIndex` (flat for
    small collections, tuned IVF beyond; see clipdex.index.ann) plus the generation it reflects."""

    def __init__(
        self, dim: int, index: AnnIndex | None = None, generation: int = 0, info: dict | None = None
    ):
        self.dim = dim
        self.ann = index if index is not None else ann.build(np.zeros((0, dim), np.float32), np.zeros(0))
        if info:
            self.ann.info.update(info)
        self.generation = generation
        self._gpu: AnnIndex | None = None
        self.delta: AnnIndex | None = None  # reader catch-up: current vectors of changed ids
        self.tombs: set[int] = set()  # reader catch-up: base ids removed or replaced since
        self.exact_fallback = False  # built in memory from SQLite because the file was unusable
        # Search on a GPU copy (when FAISS sees a GPU). Off by default: cloning a large index costs
        # more than one CPU search, so only long-running processes (serve) turn it on.
        self.use_gpu = False

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        dim: int,
        generation: int,
        kind: str = "auto",
        tune_queries: np.ndarray | None = None,
    ) -> VectorIndex:
        """Index type chosen by ann.choose_kind (or forced by `kind`), search parameters tuned
        (on `tune_queries` when given: a sample of the queries this index will really answer)."""
        vectors = np.asarray(vectors, np.float32).reshape(len(ids), dim)
        built = ann.build(vectors, np.asarray(ids, np.int64), kind, tune_queries=tune_queries)
        return cls(dim, built, generation)

    @property
    def info(self) -> dict:
        """Type, params, recall_at_10, build_seconds, bytes_per_vector… (see ann.build)."""
        return self.ann.info

    @property
    def ntotal(self) -> int:
        """Live vectors, catch-up included."""
        return self.ann.ntotal - len(self.tombs) + (self.delta.ntotal if self.delta is not None else 0)

    @property
    def overlay_size(self) -> int:
        """How much a reader has caught up in memory since its base (delta + tombstones)."""
        return len(self.tombs) + (self.delta.ntotal if self.delta is not None else 0)

    def ids(self) -> np.ndarray:
        """Every live id, ascending (for `clipdex check`)."""
        base = self.ann.ids()
        dead = np.fromiter(self.ann.removed | self.tombs, np.int64)
        live = [base[~np.isin(base, dead)]] if len(dead) else [base]
        if self.delta is not None:
            live.append(self.delta.ids())
        return np.sort(np.concatenate(live))

    def apply_changes(
        self,
        ops: list[tuple[str, int, int]],
        fetch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        generation: int,
        fold: bool = False,
    ) -> None:
        """Catch up with the change log: ``ops`` are (op, first id, last id) in the order written,
        ``fetch(ids)`` gives the (ids, vectors) of those that exist now.

        An id whose first op is "remove" was in the index before; every id touched takes its
        current vector (or none). ``fold`` (a writer) changes the base; else (a reader) the base
        stays as loaded, with tombstones and a delta index. May raise ann.NeedsRebuild when folding.
        """
        if ops:
            ids = np.concatenate([np.arange(a, b + 1, dtype=np.int64) for _, a, b in ops])
            removes = np.concatenate([np.full(b - a + 1, op == "remove") for op, a, b in ops])
            touched, first = np.unique(ids, return_index=True)
            was_there = touched[removes[first]]
            live_ids, live_vecs = fetch(touched)
            if fold:
                self.fold()
                self.remove(was_there)
                self.add(live_ids, live_vecs)
            else:
                self._overlay(touched, was_there, live_ids, live_vecs)
        self.generation = generation

    def _overlay(self, touched: np.ndarray, was_there: np.ndarray, live_ids: np.ndarray,
                 live_vecs: np.ndarray) -> None:  # fmt: skip
        in_delta = set()
        if self.delta is not None:
            in_delta = set(self.delta.ids().tolist())
            self.delta.remove(touched)
        self.tombs.update(i for i in was_there.tolist() if i not in in_delta)
        if len(live_ids):
            if self.delta is None:
                self.delta = ann.build(np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), "flat")
            self.delta.add(live_vecs, live_ids)

    def fold(self) -> None:
        """Move a reader's catch-up into the base (before a writer changes or saves it)."""
        if self.tombs:
            self.ann.remove(np.fromiter(self.tombs, np.int64, len(self.tombs)))
            self.tombs = set()
        if self.delta is not None:
            ids = self.delta.ids()
            vecs = np.vstack([self.delta.index.reconstruct(int(i)) for i in ids]) if len(ids) else None
            self.delta = None
            if vecs is not None:
                self.add(ids, vecs)
        self._gpu = None

    def stale(self) -> bool:
        """Worth rebuilding from the store (grown well past what it was trained on, many removals)."""
        return self.ann.stale()

    def add(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        if len(ids):
            self.ann.add(vectors, np.asarray(ids, np.int64))
            self._gpu = None

    def remove(self, ids: np.ndarray | list[int]) -> None:
        if len(ids):
            self.ann.remove(np.asarray(ids, np.int64))
            self._gpu = None

    def search(
        self,
        queries: np.ndarray,
        k: int,
        get_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[list[tuple[int, float]]]:
        """Top-k (id, exact cosine) per query; ties by ascending id.

        Scores are recomputed from `get_vectors` (the stored float32 vectors), also when the index
        is approximate or compressed; without it only a flat index can supply its own vectors.
        `allowed` restricts the search to those ids (a FAISS ID selector, on the CPU index).
        """
        if self.ntotal == 0:
            return [[] for _ in range(len(queries))]
        if get_vectors is None:
            get_vectors = self._own_vectors
        searcher = self.ann if allowed is not None else self._searcher()  # GPU indexes lack selectors
        scores, ids = searcher.search(queries, k, get_vectors, allowed, self.tombs)
        if self.delta is not None and self.delta.ntotal:
            d_scores, d_ids = self.delta.search(queries, k, get_vectors, allowed)
            scores, ids = np.hstack([scores, d_scores]), np.hstack([ids, d_ids])
            key = np.where(ids >= 0, ids, np.iinfo(np.int64).max)
            order = np.lexsort((key, -scores), axis=-1)[:, :k]
            scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        return [[(int(i), float(s)) for i, s in zip(ir, sr) if i >= 0] for ir, sr in zip(ids, scores)]

    def _own_vectors(self, ids: np.ndarray) -> np.ndarray:
        if self.ann.kind != "flat":
            raise ValueError(f"a {self.ann.kind} index needs get_vectors to re-rank exactly")
        return np.vstack([self.ann.index.reconstruct(int(i)) for i in ids])

    def _searcher(self) -> AnnIndex:
        if self.use_gpu and _faiss().get_num_gpus() > 0:
            if self._gpu is None:
                self._gpu = ann.to_gpu(self.ann)
            return self._gpu
        return self.ann

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Atomic: write a temp file in the same folder, fsync, rename over the old one."""
        self.fold()
        header = json.dumps({"generation": self.generation, "dim": self.dim}).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                f.write(MAGIC + struct.pack("<Q", len(header)) + header)
                self.ann.write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def read_header(path: Path) -> dict | None:
        """``{"generation", "dim"}`` of a saved file without reading the index (None: missing/unreadable)."""
        try:
            with open(path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    return None
                (hlen,) = struct.unpack("<Q", f.read(8))
                return json.loads(f.read(hlen)) if hlen < 1 << 16 else None
        except (OSError, ValueError, struct.error):
            return None

    @classmethod
    def load(cls, path: Path) -> VectorIndex | None:
        """The saved index, or None when missing or unreadable (the caller rebuilds)."""
        try:
            with open(path, "rb", buffering=1 << 20) as f:
                if f.read(len(MAGIC)) != MAGIC:
                    return None
                (hlen,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(hlen))
                index = AnnIndex.read(f)
        except (OSError, ValueError, KeyError, struct.error):
            return None
        return cls(header["dim"], index, header["generation"])
