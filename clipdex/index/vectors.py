"""FAISS index files derived from the store: build, search, incremental update, atomic save.

A file records the database generation it reflects; a missing, unreadable or stale file is
rebuilt from SQLite. Scores handed out are exact cosine similarities of the stored float32
vectors, best first, ties broken by ascending id.
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

MAGIC = b"CLIPDEX-FAISS-1\n"


def _faiss() -> Any:
    import faiss

    return faiss


class VectorIndex:
    """An exact inner-product index over unit vectors, keyed by SQLite ids."""

    def __init__(self, dim: int, index: Any = None, generation: int = 0, info: dict | None = None):
        faiss = _faiss()
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.generation = generation
        self.info = info or {"type": "flat", "params": {}}
        self._gpu: Any = None

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, generation: int) -> VectorIndex:
        vi = cls(dim, generation=generation)
        vi.add(ids, vectors)
        return vi

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))
            self._gpu = None

    def remove(self, ids: np.ndarray | list[int]) -> None:
        if len(ids):
            self.index.remove_ids(np.asarray(ids, np.int64))
            self._gpu = None

    def search(
        self, queries: np.ndarray, k: int, get_vectors: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> list[list[tuple[int, float]]]:
        """Top-k (id, exact cosine) per query; ties by ascending id."""
        n = self.ntotal
        if n == 0:
            return [[] for _ in range(len(queries))]
        queries = np.ascontiguousarray(queries, np.float32)
        # Ask for a margin beyond k so that ties at the cut are resolved by id, not by FAISS order.
        fetch = min(n, k + max(8, k))
        _, cand = self._searcher().search(queries, fetch)
        out = []
        for q, row in zip(queries, cand):
            row = row[row >= 0]
            vecs = (
                get_vectors(row) if get_vectors else np.vstack([self.index.reconstruct(int(i)) for i in row])
            )
            # Row by row in float64, not a float32 BLAS gemv: gemv's result for a row depends on its
            # position in the matrix, so identical vectors got different scores (1.0 vs 0.99999994)
            # depending on k, and ties were then broken by rounding noise instead of by id.
            scores = (np.asarray(vecs, np.float64) * q.astype(np.float64)).sum(axis=1)
            order = np.lexsort((row, -scores))[:k]
            out.append([(int(row[j]), float(scores[j])) for j in order])
        return out

    def _searcher(self) -> Any:
        faiss = _faiss()
        if faiss.get_num_gpus() > 0:
            if self._gpu is None:
                self._gpu = faiss.index_cpu_to_all_gpus(self.index)
            return self._gpu
        return self.index

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Atomic: write a temp file in the same folder, fsync, rename over the old one."""
        faiss = _faiss()
        header = json.dumps({"generation": self.generation, "dim": self.dim, "info": self.info}).encode()
        body = faiss.serialize_index(self.index)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + struct.pack("<Q", len(header)) + header)
                f.write(body.tobytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> VectorIndex | None:
        """The saved index, or None when missing or unreadable (the caller rebuilds)."""
        faiss = _faiss()
        try:
            data = path.read_bytes()
            if not data.startswith(MAGIC):
                return None
            (hlen,) = struct.unpack_from("<Q", data, len(MAGIC))
            start = len(MAGIC) + 8
            header = json.loads(data[start : start + hlen])
            index = faiss.deserialize_index(np.frombuffer(data, np.uint8, offset=start + hlen))
        except (OSError, ValueError, RuntimeError, struct.error):
            return None
        return cls(header["dim"], index, header["generation"], header.get("info"))
