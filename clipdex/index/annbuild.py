"""Building an AnnIndex: train the chosen FAISS index on a sample, add the vectors, tune its
search parameters against exact results (see clipdex.index.tuning)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from clipdex.index.ann import AnnIndex, _faiss
from clipdex.index.choose import (
    KINDS,
    MIN_TRAIN,
    ONDISK,
    bytes_per_vector,
    choose_kind,
    default_memory_budget,
    pq_m,
)
from clipdex.index.codes import ItqCodec, binary_index
from clipdex.index.tuning import tune


def build(
    vectors: np.ndarray,
    ids: np.ndarray,
    kind: str = "auto",
    *,
    memory_budget: int | None = None,
    seed: int = 0,
    target_recall: float = 0.95,
    threads: int | None = None,
    tune_queries: np.ndarray | None = None,
) -> AnnIndex:
    """Build and tune an index over unit `vectors` (n, d) keyed by `ids` (n,) int64.

    kind "auto" uses `choose_kind`. Approximate kinds need at least MIN_TRAIN vectors to train
    on; below that the index is flat (info["requested"] keeps what was asked). Search parameters
    are the cheapest that reach `target_recall` (recall@10 after exact re-ranking) on queries
    made from stored vectors, or on `tune_queries` when given (a sample of real queries, e.g.
    stored text vectors for an image index: cross-modal queries sit further from the data and
    may need more probes). info records the parameters, the recall measured and the timings.
    """
    faiss = _faiss()
    if threads:
        faiss.omp_set_num_threads(threads)
    x = np.ascontiguousarray(vectors, np.float32)
    ids = np.asarray(ids, np.int64)
    n, d = x.shape
    if len(ids) != n:
        raise ValueError(f"{n} vectors but {len(ids)} ids")
    budget = default_memory_budget() if memory_budget is None else memory_budget
    requested = kind
    if kind == "auto":
        kind = choose_kind(n, d, budget)
    if kind == ONDISK:  # its lists live in a library folder (clipdex.index.ondisk); in memory: its twin
        kind = "ivf-pq"
    if kind not in KINDS:
        raise ValueError(f"unknown index type {kind!r}; choose from auto, {', '.join(KINDS)}")
    if kind != "flat" and n < MIN_TRAIN:
        kind = "flat"

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    train = x[np.sort(rng.choice(n, min(n, _train_size(kind, n)), replace=False))]
    index, codec, params = _make(kind, d, n, train, seed)
    ann = AnnIndex(kind, index, {"params": params}, codec)
    ann.index.add_with_ids(ann._encode(x), ids)
    build_seconds = time.perf_counter() - t0
    ann.info.update(
        type=kind,
        requested=requested,
        dim=d,
        ntotal=n,
        built_on=n,
        trained_on=len(train),
        bytes_per_vector=bytes_per_vector(kind, d),
        memory_budget=budget,
        device="cpu",
        recall_at_10=1.0 if kind == "flat" else None,
    )
    if kind != "flat":
        tune(ann, x, ids, target_recall, rng, tune_queries)
    ann.info["build_seconds"] = round(build_seconds, 3)
    ann.info["tune_seconds"] = round(time.perf_counter() - t0 - build_seconds, 3)
    scan = next((k for k in ("flat", "fp16", "sq8") if n * bytes_per_vector(k, d) <= budget), None)
    if (
        requested == "auto"
        and kind not in ("flat", scan)
        and scan
        and ann.info["recall_at_10"] < target_recall
    ):
        # Data with no cluster structure (IVF's premise) can miss the target at any nprobe: an
        # exact scan is slower per query but never silently wrong, so auto prefers it.
        fallback = build(x, ids, scan, memory_budget=budget, seed=seed, target_recall=target_recall)
        fallback.info.update(
            requested="auto",
            fallback_from={"type": kind, "recall_at_10": ann.info["recall_at_10"]},
            build_seconds=round(time.perf_counter() - t0, 3),
        )
        return fallback
    return ann


def _nlist(n: int) -> int:
    """~2 sqrt(n) lists (2,000 at 1M), with >= 39 training points each (faiss's minimum).

    Training and assigning cost grow with nlist (at 4 sqrt(n) a 1M build took ~50 s on 2 cores);
    twice the vectors per list only doubles a sub-millisecond probe.
    """
    return max(1, min(int(2 * np.sqrt(n)), n // 39))


def _train_size(kind: str, n: int) -> int:
    if kind == "flat":
        return 0
    if kind in ("ivf-flat", "ivf-pq"):
        # 40 points per list: k-means cost ~ 40 * nlist^2 * d = 640 n d, so training stays linear in n.
        return 40 * _nlist(n)
    return 10_000  # sq8 ranges, ITQ rotation (d x d SVDs), HNSW (unused): a sample is plenty


def _make(kind: str, d: int, n: int, train: np.ndarray, seed: int) -> tuple[Any, ItqCodec | None, dict]:
    """An empty, trained index of `kind` that takes explicit ids, its codec and default params."""
    faiss = _faiss()
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(d)), None, {}  # IDMap2: reconstruct(id) works
    if kind == "binary":
        codec = ItqCodec.train(train, nbits=d - d % 8, seed=seed)
        return binary_index(codec.nbits), codec, {"nbits": codec.nbits}
    if kind in ("sq8", "fp16"):
        qt = faiss.ScalarQuantizer.QT_8bit if kind == "sq8" else faiss.ScalarQuantizer.QT_fp16
        index = faiss.IndexScalarQuantizer(d, qt, ip)
        index.train(train)
        return faiss.IndexIDMap(index), None, {}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, ip)
        return faiss.IndexIDMap(index), None, {"M": 32}
    nlist = _nlist(n)
    if kind == "ivf-flat":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, ip)
        params = {"nlist": nlist}
    else:
        m = pq_m(d)
        nbits = int(min(8, max(1, np.log2(len(train) / 39))))  # 256 centroids need ~10k points
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, nbits, ip)
        index.do_polysemous_training = False  # on by default and 5x the training time, for no use here
        index.pq.cp.niter = 10  # 64 small k-means: 25 iterations buy nothing after exact re-ranking
        params = {"nlist": nlist, "m": m, "nbits": nbits}
    index.cp.seed = seed
    index.train(train)
    return index, None, params
