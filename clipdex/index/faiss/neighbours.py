"""Batch k-NN of every stored vector against all: the pairs the duplicate finder groups."""

from __future__ import annotations

from typing import Any

import numpy as np

from clipdex.index.faiss.policy import ivf_lists
from clipdex.index.faiss.runtime import faiss_module

NEIGHBOURS = 16  # per image: enough to chain any group together (a clique needs only a spanning tree)
EXACT_MAX = 5_000  # up to this many vectors an exact (flat) k-NN (n^2 d flops); beyond, an IVF one
NPROBE = 4  # near-duplicates sit in the same or an adjacent cell: a few probes find them (bench: recall 1.0)


def neighbour_pairs(vectors: np.ndarray, threshold: float, k: int = NEIGHBOURS) -> np.ndarray:
    """(E, 2) row pairs (i < j) whose inner product is at least ``threshold``, from one batch
    k-NN search of every vector against all (flat up to EXACT_MAX vectors, IVF beyond)."""
    faiss = faiss_module()
    x = np.ascontiguousarray(vectors, np.float32)
    n, d = x.shape
    if n < 2:
        return np.zeros((0, 2), np.int64)
    if n <= EXACT_MAX:
        index: Any = faiss.IndexFlatIP(d)
    else:
        nlist = ivf_lists(n, 2, min_points=None)  # n > EXACT_MAX: thousands of points a list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(n, min(n, 40 * nlist), replace=False)])
        index.nprobe = NPROBE
    index.add(x)
    scores, nbrs = index.search(x, min(n, k + 1))  # +1: each vector finds itself
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    cols, s = nbrs.ravel(), scores.ravel()
    keep = (cols >= 0) & (cols != rows) & (s >= threshold)
    pairs = np.sort(np.stack([rows[keep], cols[keep]], axis=1), axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs
