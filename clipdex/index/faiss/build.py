"""Building an AnnIndex: train the chosen FAISS index on a sample, add the vectors, tune its
search parameters against exact results (see clipdex.index.faiss.tuning).

ivf-fp16 (the kind auto picks past the flat-scan size; see clipdex.index.faiss.policy for the
measurements behind it) and ivf-flat are built to keep a 1M x 512 build within seconds on 2 cores:
~16 sqrt(n) lists whose centroids live in a 32-d PCA space (`policy.ivf_layout`), trained by
two-level k-means on a sample of 20 vectors a list (sqrt(nlist) coarse groups, then each group
split in proportion to its size; a few seconds, where one flat k-means over 16,000 centroids would
take minutes), then every vector assigned by an exact 32-d scan of the centroids. ivf-flat's lists
hold the float32 vectors themselves, so its candidates carry exact scores; ivf-fp16's hold them in
float16 (half the bytes a query scans): its candidates' scores are within ~1e-3, and the re-rank
reads their k + MARGIN stored float32 vectors.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from clipdex.index.faiss.ann import AnnIndex
from clipdex.index.faiss.codes import ItqCodec, binary_index
from clipdex.index.faiss.policy import (
    KINDS,
    LAYOUT_KINDS,
    MIN_TRAIN,
    ONDISK,
    bytes_per_vector,
    choose_kind,
    default_memory_budget,
    ivf_layout,
    ivf_lists,
    pq_m,
)
from clipdex.index.faiss.runtime import faiss_module, single_thread
from clipdex.index.faiss.tuning import tune


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
    requested = kind
    if threads:
        faiss_module().omp_set_num_threads(threads)
    x = np.ascontiguousarray(vectors, np.float32)
    ids = np.asarray(ids, np.int64)
    n, d = x.shape
    if len(ids) != n:
        raise ValueError(f"{n} vectors but {len(ids)} ids")
    budget = default_memory_budget() if memory_budget is None else memory_budget
    kind = _resolve_kind(kind, n, d, budget)

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    trained_rows = np.sort(rng.choice(n, min(n, _train_size(kind, n)), replace=False))
    ann = _filled(kind, x, ids, x[trained_rows], seed)
    build_seconds = time.perf_counter() - t0
    ann.info.update(
        type=kind,
        requested=requested,
        dim=d,
        ntotal=n,
        built_on=n,
        trained_on=len(trained_rows),
        bytes_per_vector=bytes_per_vector(kind, d),
        memory_budget=budget,
        device="cpu",
        recall_at_10=1.0 if kind == "flat" else None,
    )
    if kind != "flat":
        untrained = np.ones(n, bool)
        untrained[trained_rows] = False
        tune(ann, x, ids, target_recall, rng, tune_queries, np.nonzero(untrained)[0])
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


def _resolve_kind(kind: str, n: int, d: int, budget: int) -> str:
    """The kind to build for a requested one: auto's choice, the on-disk kind's in-memory twin,
    flat while there are too few vectors to train on. ValueError for an unknown kind."""
    if kind == "auto":
        kind = choose_kind(n, d, budget)
    if kind == ONDISK:  # its lists live in a library folder (clipdex.index.faiss.ondisk); in memory: its twin
        kind = "ivf-pq"
    if kind not in KINDS:
        raise ValueError(f"unknown index type {kind!r}; choose from auto, {', '.join(KINDS)}")
    if kind != "flat" and n < MIN_TRAIN:
        kind = "flat"
    return kind


def _filled(kind: str, x: np.ndarray, ids: np.ndarray, train: np.ndarray, seed: int) -> AnnIndex:
    """An index of ``kind`` trained on ``train`` and holding every row of ``x`` under ``ids``."""
    index, codec, params = _make(kind, x.shape[1], len(x), train, seed)
    ann = AnnIndex(kind, index, {"params": params}, codec)
    ann.index.add_with_ids(ann.encode(x), ids)
    return ann


def _nlist(n: int) -> int:
    """ivf-pq: ~2 sqrt(n) lists (2,000 at 1M), with >= 39 training points each (faiss's minimum).

    Training and assigning cost grow with nlist (at 4 sqrt(n) a 1M build took ~50 s on 2 cores);
    twice the vectors per list only doubles a sub-millisecond probe.
    """
    return ivf_lists(n, 2)


def _train_size(kind: str, n: int) -> int:
    if kind == "flat":
        return 0
    if kind in LAYOUT_KINDS:
        nlist, _ = ivf_layout(n, 0)  # (nlist does not depend on d)
        return max(20 * nlist, 10_000)  # two-level k-means in 32-d: cheap per point
    if kind == "ivf-pq":
        # 40 points per list: k-means cost ~ 40 * nlist^2 * d = 640 n d, so training stays linear in n.
        return 40 * _nlist(n)
    return 10_000  # sq8 ranges, ITQ rotation (d x d SVDs), HNSW (unused): a sample is plenty


def _make(kind: str, d: int, n: int, train: np.ndarray, seed: int) -> tuple[Any, ItqCodec | None, dict]:
    """An empty, trained index of `kind` that takes explicit ids, its codec and default params."""
    faiss = faiss_module()
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
    if kind in LAYOUT_KINDS:
        quantizer, nlist, coarse = _coarse_quantizer(train, *ivf_layout(n, d), seed)
        if kind == "ivf-flat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
        else:  # by_residual=False: the quantizer lives in a PCA space, the codes in the vectors' own
            fp16 = faiss.ScalarQuantizer.QT_fp16
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, fp16, ip, False)
        index.train(train[:1])  # the quantizer is trained and filled (fp16 codes learn nothing)
        return index, None, {"nlist": nlist, "coarse_dim": coarse}
    index, params = ivf_pq(d, _nlist(n), train, seed)
    return index, None, params


def ivf_pq(
    d: int, nlist: int, train: np.ndarray, seed: int, coarse_niter: int | None = None
) -> tuple[Any, dict]:
    """An empty IVF-PQ over inner products trained on ``train`` (the in-memory ivf-pq, and the
    on-disk index's base): ``nlist`` lists, one-byte codes of 8 dimensions each; its params."""
    faiss = faiss_module()
    m = pq_m(d)
    nbits = int(min(8, max(1, np.log2(len(train) / 39))))  # 256 centroids need ~10k points
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.do_polysemous_training = False  # on by default and 5x the training time, for no use here
    index.pq.cp.niter = 10  # 64 small k-means: 25 iterations buy nothing after exact re-ranking
    if coarse_niter is not None:
        index.cp.niter = coarse_niter
    index.cp.seed = seed
    index.train(np.ascontiguousarray(train, np.float32))
    return index, {"nlist": nlist, "m": m, "nbits": nbits}


def _coarse_quantizer(train: np.ndarray, nlist: int, coarse: int, seed: int) -> tuple[Any, int, int]:
    """(quantizer, nlist, coarse_dim): nlist centroids of `train` found by two-level k-means in a
    `coarse`-dim PCA space (the vectors' own space when coarse == d), searched by L2 there."""
    faiss = faiss_module()
    d = train.shape[1]
    pca = None
    if coarse < d:
        pca = faiss.PCAMatrix(d, coarse)
        pca.train(train[:50_000])
        train = pca.apply(train)
    with single_thread(True):  # ~130 small k-means: OpenMP barriers cost 10x the work on busy cores
        centroids = _two_level_kmeans(train, nlist, seed)
    flat = faiss.IndexFlatL2(train.shape[1])
    flat.add(centroids)
    quantizer = flat if pca is None else faiss.IndexPreTransform(pca, flat)
    return quantizer, len(centroids), train.shape[1]


def _two_level_kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """~k centroids of x: sqrt(k) groups, then each group split into centroids in proportion to
    its size (costs ~2 n sqrt(k) d per iteration instead of n k d)."""
    k1 = int(round(np.sqrt(k)))
    if k <= 256 or k1 * 39 > len(x):
        return _kmeans(x, k, seed)
    groups = faiss_module().knn(x, _kmeans(x, k1, seed), 1)[1][:, 0]
    parts = []
    for g in range(k1):
        xg = np.ascontiguousarray(x[groups == g])
        kg = min(len(xg), max(1, round(k * len(xg) / len(x))))
        if kg:
            parts.append(_kmeans(xg, kg, seed + 1 + g) if kg > 1 else xg.mean(axis=0, keepdims=True))
    return np.vstack(parts).astype(np.float32)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    faiss = faiss_module()
    km = faiss.Kmeans(x.shape[1], k, niter=10, seed=seed, min_points_per_centroid=1,
                      max_points_per_centroid=1 << 30)  # fmt: skip
    km.train(np.ascontiguousarray(x, np.float32))
    return km.centroids
