"""Search-parameter tuning: the cheapest nprobe / efSearch / re-rank length reaching a recall target.

Measured against exact results (faiss.knn) on held-out-like queries, so `clipdex info` can show
the recall@10 an approximate index really delivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from clipdex.index.ann import AnnIndex

TUNE_QUERIES = 200
# Search-parameter grids, cheapest first; the first setting reaching the target recall wins.
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024)
RERANK = {"sq8": (2, 4, 8), "fp16": (1, 2, 4), "binary": (10, 20, 50, 100, 200), "ivf-pq": (10, 20, 50)}


def tune(
    ann: AnnIndex,
    x: np.ndarray,
    ids: np.ndarray,
    target: float,
    rng: np.random.Generator,
    queries: np.ndarray | None,
) -> None:
    """Pick the cheapest search parameters reaching `target` recall@10 on held-out-like queries.

    Without `queries`: stored vectors moved off their point by isotropic noise (|noise| = 0.5,
    cos ~0.9 to the source) and renormalised: near the data, like real image queries, but not on
    it. Each query's source vector is dropped from both the exact and the approximate lists: it
    would be a trivial top-1 that every index finds.
    """
    import faiss

    n, d = x.shape
    if queries is None:
        src = np.sort(rng.choice(n, min(n, TUNE_QUERIES), replace=False))
        noise = rng.standard_normal((len(src), d)).astype(np.float32)
        q = x[src] + 0.5 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
        skip = ids[src]
    else:
        q = np.asarray(queries, np.float32)[:TUNE_QUERIES]
        skip = np.full(len(q), -2, np.int64)  # nothing to drop (-2 is never an id nor the -1 pad)
    q = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), np.float32)
    k = min(10, n - 1)
    _, gt = faiss.knn(q, x, k + 1, faiss.METRIC_INNER_PRODUCT)
    truth = _drop_self(ids[gt], skip, k)
    order = np.argsort(ids)

    def get_vectors(want: np.ndarray) -> np.ndarray:
        return x[order[np.searchsorted(ids, want, sorter=order)]]

    def recall() -> float:
        _, found = ann.search(q, k + 1, get_vectors)
        found = _drop_self(found, skip, k)
        return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, truth)]))

    grid: list[dict] = [{}]
    if ann.kind in ("ivf-flat", "ivf-pq"):
        nlist = ann.info["params"]["nlist"]
        grid = [{"nprobe": p} for p in NPROBES if p <= nlist] or [{"nprobe": nlist}]
    elif ann.kind == "hnsw":
        grid = [{"efSearch": e} for e in EF_SEARCH]
    if ann.kind in RERANK:  # the candidate list's length is the other knob
        grid = [{**g, "rerank": r} for g in grid for r in RERANK[ann.kind]]
        if ann.kind == "ivf-pq":  # nprobe first: a longer list cannot recover an unvisited list
            grid.sort(key=lambda g: (g["nprobe"], g["rerank"]))
    best_r, best_p = -1.0, grid[-1]
    for params in grid:
        ann.set_params(**params)
        r = recall()
        if r > best_r:
            best_r, best_p = r, params
        if r >= target:
            break
    else:  # target not reached: keep the best seen
        ann.set_params(**best_p)
        r = best_r
    ann.info["recall_at_10"] = round(r, 4)
    ann.info["tune_queries"] = len(q)


def _drop_self(found: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """Each row without its own source id, cut to k."""
    return np.array([row[row != s][:k] for row, s in zip(found, self_ids)])
