"""Approximate and compact FAISS indexes over unit vectors, with exact re-ranking.

Pure numpy/faiss: ids are the caller's int64 ids, and the caller supplies the stored float32
vectors (`get_vectors`) so that every returned score is the exact cosine, ties by ascending id,
whatever the index. The index only proposes candidates.

Kinds: "flat" (exact), "ivf-flat", "ivf-pq" (both tuned: nprobe), "hnsw" (efSearch), "sq8", "fp16"
(scalar-quantised scans), "binary" (ITQ hash codes, Hamming scan). `choose_kind` picks one from the
collection size and a memory budget; `build` trains it and tunes its search parameters against
exact results on held-out queries, recording what it chose and the recall it measured in `info`.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from clipdex.index.codes import ItqCodec, binary_index
from clipdex.index.tuning import tune

KINDS = ("flat", "ivf-flat", "ivf-pq", "hnsw", "sq8", "fp16", "binary")
# Kinds whose own scores are float32 inner products: a candidate list cut in the middle of a run
# of equal scores is widened, so that ties are broken by id rather than by FAISS's order.
EXACT_SCORE_KINDS = {"flat", "ivf-flat", "hnsw"}
GPU_KINDS = {"flat", "ivf-flat", "ivf-pq"}

# A flat scan costs ~0.1 ms per 1,000 512-d vectors for one query on one core (memory bound:
# ~10 ms at 100k, ~20 ms at 200k, ~200 ms at 1M; bench/search.py). Up to 150k x 512 floats
# (~15 ms) exact search is fast enough and needs no training; beyond it IVF answers in ~1 ms.
FLAT_MAX_FLOATS = 150_000 * 512
MIN_TRAIN = 1_000  # below this an approximate index has nothing to learn from: build flat
QUERY_CHUNK = 32
SMALL_BATCH = 8  # fewer queries than this are searched on one thread
MARGIN = 10  # extra candidates beyond k * rerank, so that near-ties at the cut are re-ranked too
# FAISS GPU indexes answer at most this many neighbours per query (k and nprobe); a search that
# needs more candidates runs on the CPU index the GPU copy was made from.
GPU_MAX_K = 2048


def default_memory_budget() -> int:
    """A quarter of physical memory (4 GiB when unknown): room for the index next to everything else."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def pq_m(dim: int) -> int:
    """PQ sub-quantisers: 8 dims each (64 bytes for 512-d), the largest divisor of dim up to dim // 8."""
    return next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)


def bytes_per_vector(kind: str, dim: int) -> int:
    """Index memory per vector, including the 8-byte id (HNSW adds its level-0 links)."""
    code = {
        "flat": 4 * dim,
        "ivf-flat": 4 * dim,
        "hnsw": 4 * dim + 2 * 32 * 4,
        "fp16": 2 * dim,
        "sq8": dim,
        "ivf-pq": pq_m(dim),
        "binary": -(-dim // 8),
    }[kind]
    return code + 8


def choose_kind(n: int, dim: int, memory_budget: int | None = None) -> str:
    """The index for n vectors of dim: exact while a scan is fast, else IVF; smaller codes if memory is short.

    Small collections (n * dim <= FLAT_MAX_FLOATS) are scanned: flat, else fp16, sq8 or binary codes,
    whichever first fits the budget. Larger ones get an inverted file: ivf-flat if its float32
    vectors fit, else ivf-pq (64 bytes per 512-d vector).
    """
    budget = default_memory_budget() if memory_budget is None else memory_budget

    def fits(kind: str) -> bool:
        return n * bytes_per_vector(kind, dim) <= budget

    if n * dim <= FLAT_MAX_FLOATS:
        return next((k for k in ("flat", "fp16", "sq8") if fits(k)), "binary")
    return "ivf-flat" if fits("ivf-flat") else "ivf-pq"


def _faiss() -> Any:
    import faiss

    return faiss


class NeedsRebuild(Exception):
    """An id to add is tombstoned (an index that cannot remove in place): only a rebuild can
    replace its vector."""


@dataclass
class AnnIndex:
    kind: str
    index: Any  # a faiss Index or IndexBinary (ids are the caller's)
    info: dict
    codec: ItqCodec | None = None  # binary kind: float vectors -> codes
    removed: set[int] = field(default_factory=set)  # tombstones where the index cannot remove_ids
    cpu: AnnIndex | None = None  # for a GPU copy: the CPU index it was cloned from (k > GPU_MAX_K)

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstoned ones excluded)."""
        return int(self.index.ntotal) - len(self.removed)

    # ---- updates ----------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add without retraining (IVF assigns to the existing lists; see `stale`)."""
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return
        if self.removed and not self.removed.isdisjoint(ids.tolist()):
            raise NeedsRebuild(f"{self.kind} index: cannot replace a removed id's vector in place")
        self.index.add_with_ids(self._encode(vectors), ids)
        self.info["ntotal"] = self.ntotal

    def remove(self, ids: np.ndarray) -> None:
        """Remove in place where the index supports it; otherwise tombstone (filtered at search)."""
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return
        try:
            self.index.remove_ids(ids)
        except RuntimeError:  # HNSW, GPU indexes
            self.removed.update(ids.tolist())
        self.info["ntotal"] = self.ntotal

    def stale(self) -> bool:
        """Worth a rebuild: many tombstones, trained on far fewer vectors, or auto would pick another kind."""
        n, built = self.ntotal, self.info["built_on"]
        if len(self.removed) > 0.1 * max(n, 1):
            return True
        if self.kind != "flat" and n > 2 * max(built, MIN_TRAIN):
            return True
        if self.kind == "flat" and self.info["requested"] not in ("auto", "flat") and n >= MIN_TRAIN:
            return True  # a forced type fell back to flat while too small to train; now it can be built
        return (
            self.info["requested"] == "auto"
            and n > 1.2 * built
            and choose_kind(n, self.info["dim"], self.info["memory_budget"]) != self.kind
        )

    # ---- search -----------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        """Every id stored in the FAISS index (tombstoned ones included), unsorted."""
        faiss = _faiss()
        if hasattr(self.index, "id_map"):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        invlists = faiss.extract_index_ivf(self.index).invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
            for lst in range(invlists.nlist)
            if invlists.list_size(lst)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        get_vectors: Callable[[np.ndarray], np.ndarray],
        allowed: np.ndarray | None = None,
        exclude: set[int] | frozenset[int] = frozenset(),
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k): exact cosine (float64 sums of the float32 vectors' products)
        from `get_vectors`, best first, ties by ascending id.

        `get_vectors(ids)` returns the stored float32 vectors of the given (sorted, unique) ids, in
        that order. Rows with fewer than k results are padded with id -1 and score -inf.
        `allowed` (ids) restricts the search to those items through a FAISS ID selector; an IVF
        index probes more lists (up to all of them) until k allowed items are found. Ids in
        `exclude` (a reader's tombstones) are never returned.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if len(q) > QUERY_CHUNK:  # bound the re-rank's (queries x candidates x dim) float64 block
            chunks = range(0, len(q), QUERY_CHUNK)
            parts = [self.search(q[s : s + QUERY_CHUNK], k, get_vectors, allowed, exclude) for s in chunks]
            return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])
        scores = np.full((len(q), k), -np.inf)
        ids = np.full((len(q), k), -1, np.int64)
        total = int(self.index.ntotal)
        if not len(q) or k < 1 or self.ntotal == 0:
            return scores, ids
        dropped = self.removed | exclude if exclude else self.removed
        fetch = min(total, k * self.info["params"].get("rerank", 1) + MARGIN + len(dropped))
        selector = _Selector(self, allowed, k) if allowed is not None else None
        rows = np.arange(len(q))
        src = self  # where candidates come from: a GPU copy, or its CPU index past GPU_MAX_K
        while len(rows):
            if _on_gpu(src) and (fetch > GPU_MAX_K or selector is not None) and src.cpu is not None:
                src = src.cpu
            cand_scores, cand = src._candidates(q[rows], fetch, selector)
            s, i = self._rerank(q[rows], cand, k, get_vectors, dropped)
            scores[rows], ids[rows] = s, i
            if selector is not None and selector.widen((i >= 0).sum(axis=1)):
                rows = rows[(i >= 0).sum(axis=1) < selector.need]  # probe more lists for these
                continue
            if self.kind not in EXACT_SCORE_KINDS or fetch >= total:
                break
            # Widen where the k-th score ties with the weakest candidate: equal scores may lie beyond.
            last = cand_scores[:, -1]
            rows = rows[(cand[:, -1] >= 0) & (s[:, -1] <= last + 1e-5)]
            fetch = min(total, 2 * fetch)
        return scores, ids

    def _candidates(
        self, q: np.ndarray, fetch: int, selector: _Selector | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        params = selector.params() if selector is not None else None
        with _single_thread(len(q) < SMALL_BATCH):
            if self.codec is not None:
                dist, cand = self.index.search(self.codec.encode(q), fetch, params=params)
                return -dist.astype(np.float32), cand  # Hamming: smaller is better
            return self.index.search(q, fetch, params=params)

    def _rerank(
        self, q: np.ndarray, cand: np.ndarray, k: int, get_vectors: Callable[[np.ndarray], np.ndarray],
        dropped: set[int] | frozenset[int] = frozenset(),
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        if dropped:
            cand = np.where(np.isin(cand, np.fromiter(dropped, np.int64, len(dropped))), -1, cand)
        valid = cand >= 0
        uniq, inv = np.unique(cand[valid], return_inverse=True)
        vecs = np.asarray(get_vectors(uniq), np.float64).reshape(len(uniq), q.shape[1])
        exact = np.full(cand.shape, -np.inf)
        # Row by row in float64 (products of float32 are exact in float64), not a float32 gemv, whose
        # result for a row depends on its position in the matrix: identical vectors must tie.
        rows = np.nonzero(valid)[0]
        exact[valid] = (vecs[inv] * q[rows].astype(np.float64)).sum(axis=1)
        key = np.where(valid, cand, np.iinfo(np.int64).max)
        order = np.lexsort((key, -exact), axis=-1)[:, :k]
        s = np.take_along_axis(exact, order, 1)
        i = np.where(np.isfinite(s), np.take_along_axis(cand, order, 1), -1)
        if s.shape[1] < k:  # fewer candidates than k
            pad = k - s.shape[1]
            s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        return s, i

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(vectors, np.float32)
        return self.codec.encode(x) if self.codec is not None else x

    def set_params(self, **params: int) -> None:
        """Apply search parameters (nprobe, efSearch, rerank) and record them in info."""
        self.info["params"].update(params)
        faiss = _faiss()
        if "nprobe" in params:
            if self.info.get("device") == "gpu":
                faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", params["nprobe"])
            else:
                faiss.extract_index_ivf(self.index).nprobe = params["nprobe"]
        if "efSearch" in params:
            faiss.downcast_index(self.index.index).hnsw.efSearch = params["efSearch"]

    # ---- persistence ------------------------------------------------------------------------
    def write(self, f: BinaryIO) -> None:
        """Write to an open file: a small .npz head (info, tombstones, codec), then the FAISS index
        streamed straight into ``f`` (no in-memory copies of a multi-GB index)."""
        faiss = _faiss()
        info = dict(self.info, device="cpu")
        arrays = {
            "info": np.frombuffer(json.dumps({"kind": self.kind, "info": info}).encode(), np.uint8),
            "removed": np.array(sorted(self.removed), np.int64),
            **(self.codec.to_arrays() if self.codec is not None else {}),
        }
        head = io.BytesIO()
        np.savez(head, **arrays)
        f.write(struct.pack("<Q", head.tell()) + head.getvalue())
        writer = faiss.PyCallbackIOWriter(f.write)
        if self.codec is not None:
            faiss.write_index_binary(self.index, writer)
        else:
            faiss.write_index(faiss.index_gpu_to_cpu(self.index) if _on_gpu(self) else self.index, writer)
        del writer  # flushes its buffer

    @classmethod
    def read(cls, f: BinaryIO) -> AnnIndex:
        """Read what `write` wrote; ValueError when it is truncated or damaged."""
        faiss = _faiss()
        try:
            (hlen,) = struct.unpack("<Q", f.read(8))
            with np.load(io.BytesIO(f.read(hlen)), allow_pickle=False) as z:
                head = json.loads(z["info"].tobytes())
                codec = ItqCodec.from_arrays(z) if "itq_mean" in z.files else None
                removed = set(z["removed"].tolist())
            reader = faiss.PyCallbackIOReader(f.read)
            index = faiss.read_index_binary(reader) if codec else faiss.read_index(reader)
        except (zipfile.BadZipFile, KeyError, EOFError, RuntimeError, struct.error) as e:
            raise ValueError(f"not a clipdex ANN index: {e}") from e
        ann = cls(head["kind"], index, head["info"], codec, removed)
        ann.set_params(**{p: v for p, v in ann.info["params"].items() if p in ("nprobe", "efSearch")})
        return ann

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.write(buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> AnnIndex:
        """Raises ValueError when `data` is not what to_bytes wrote (truncated, damaged)."""
        return cls.read(io.BytesIO(data))


class _Selector:
    """FAISS search parameters restricting a search to `allowed` ids (kept alive while in use),
    with the index's own nprobe/efSearch; for IVF, nprobe grows while too few allowed are found."""

    def __init__(self, ann: AnnIndex, allowed: np.ndarray, k: int):
        allowed = np.asarray(allowed, np.int64)
        self.kind = ann.kind
        self.need = min(k, len(allowed))
        self.sel = _faiss().IDSelectorBatch(allowed)
        # The k-th allowed item lies about n/m times deeper in the ranking than the k-th of all, and
        # spread over more lists: probe (n/m)^2 times more (bench/filtered_search.py: recall@10
        # 0.97 at 10% where n/m probes gave 0.92), which for m < ~3% of n means every list.
        depth = int(np.ceil(max(ann.ntotal, 1) / max(len(allowed), 1))) ** 2
        self.nlist = ann.info["params"].get("nlist", 1)
        nprobe = ann.info["params"].get("nprobe")
        self.nprobe = None if nprobe is None else min(self.nlist, nprobe * depth)
        ef = ann.info["params"].get("efSearch") or 16
        self.ef = min(max(ef, 2048), ef * depth)

    def params(self) -> Any:
        faiss = _faiss()
        if self.nprobe is not None:
            return faiss.SearchParametersIVF(sel=self.sel, nprobe=self.nprobe)
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=self.sel, efSearch=self.ef or 16)
        return faiss.SearchParameters(sel=self.sel)

    def widen(self, found: np.ndarray) -> bool:
        """After a pass that found `found` allowed items per query: probe more lists if that helps."""
        if self.nprobe is None or self.nprobe >= self.nlist or (found >= self.need).all():
            return False
        self.nprobe = min(self.nlist, 4 * self.nprobe)
        return True


@contextmanager
def _single_thread(enabled: bool) -> Iterator[None]:
    """FAISS parallelises over queries: a few queries gain nothing from OpenMP, and its barriers
    cost more than the search when the cores are busy (a 100k flat scan: 10 ms -> 40 ms)."""
    if not enabled:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _on_gpu(ann: AnnIndex) -> bool:
    return ann.info.get("device") == "gpu"


# ---- building -------------------------------------------------------------------------------
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


def to_gpu(ann: AnnIndex) -> AnnIndex:
    """A copy on all GPUs for the kinds FAISS supports there; `ann` itself when there are none."""
    faiss = _faiss()
    if ann.kind not in GPU_KINDS or _on_gpu(ann) or faiss.get_num_gpus() == 0:
        return ann
    if ann.info["params"].get("nprobe", 0) > GPU_MAX_K:  # more lists than a GPU search can probe
        return ann
    co = faiss.GpuMultipleClonerOptions()
    co.useFloat16 = ann.kind == "ivf-pq"  # float16 lookup tables: needed for 64 sub-quantisers
    try:
        index = faiss.index_cpu_to_all_gpus(ann.index, co)
    except RuntimeError as e:  # e.g. an unsupported PQ size: stay on the CPU, say why
        ann.info["gpu_error"] = str(e).splitlines()[0]
        return ann
    gpu = AnnIndex(ann.kind, index, dict(ann.info, device="gpu"), ann.codec, set(ann.removed), cpu=ann)
    gpu.info["params"] = dict(ann.info["params"])
    gpu.set_params(**{p: v for p, v in gpu.info["params"].items() if p == "nprobe"})
    return gpu
