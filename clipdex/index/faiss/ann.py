"""Approximate and compact FAISS indexes over unit vectors, with exact re-ranking.

Pure numpy/faiss: ids are the caller's int64 ids, and the caller supplies the stored float32
vectors (`get_vectors`) so that every returned score is the exact cosine, ties by ascending id,
whatever the index. The index only proposes candidates (ivf-flat's come with their stored float32
vectors, so its re-rank needs no get_vectors call).

Kinds: "flat" (exact), "ivf-fp16", "ivf-flat", "ivf-pq" (tuned: nprobe), "hnsw" (efSearch), "sq8", "fp16"
(scalar-quantised scans), "binary" (ITQ hash codes, Hamming scan).

This module is the index itself (updates, search, exact re-rank). By concern, elsewhere:
`clipdex.index.faiss.policy` (which kind for a size and memory budget), `clipdex.index.faiss.build`
(training, adding, tuning: `build`), `clipdex.index.faiss.files` (persistence),
`clipdex.index.faiss.gpu` (GPU copies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipdex.index.faiss.codes import ItqCodec
from clipdex.index.faiss.policy import MIN_TRAIN, choose_kind
from clipdex.index.faiss.runtime import faiss_module, single_thread

# Kinds whose own scores are float32 inner products: a candidate list cut in the middle of a run
# of equal scores is widened, so that ties are broken by id rather than by FAISS's order.
EXACT_SCORE_KINDS = {"flat", "ivf-flat", "hnsw"}
# Kinds whose FAISS index stores the float32 vectors themselves, retrievable with the candidates.
OWN_VECTOR_KINDS = {"ivf-flat"}
QUERY_CHUNK = 32
SMALL_BATCH = 8  # fewer queries than this are searched on one thread
MARGIN = 10  # extra candidates beyond k * rerank, so that near-ties at the cut are re-ranked too
# FAISS GPU indexes answer at most this many neighbours per query (k and nprobe); a search that
# needs more candidates runs on the CPU index the GPU copy was made from.
GPU_MAX_K = 2048


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

    @property
    def on_gpu(self) -> bool:
        """A GPU copy (see clipdex.index.faiss.gpu)."""
        return self.info.get("device") == "gpu"

    # ---- updates ----------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add without retraining (IVF assigns to the existing lists; see `stale`)."""
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return
        if self.removed and not self.removed.isdisjoint(ids.tolist()):
            raise NeedsRebuild(f"{self.kind} index: cannot replace a removed id's vector in place")
        self.index.add_with_ids(self.encode(vectors), ids)
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
        faiss = faiss_module()
        if hasattr(self.index, "id_map"):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return list_ids(faiss.extract_index_ivf(self.index).invlists)

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
        dead = np.fromiter(dropped, np.int64, len(dropped)) if dropped else None
        want = k * self.info["params"].get("rerank", 1) + MARGIN  # live candidates to re-rank
        fetch = min(total, want)
        selector = _Selector(self, allowed, k) if allowed is not None else None
        rows = np.arange(len(q))
        src = self  # where candidates come from: a GPU copy, or its CPU index past GPU_MAX_K
        while len(rows):
            if src.on_gpu and (fetch > GPU_MAX_K or selector is not None) and src.cpu is not None:
                src = src.cpu
            vecs = None
            if src.kind in OWN_VECTOR_KINDS and selector is None and not src.on_gpu:
                cand_scores, cand, vecs = src._candidates_with_vectors(q[rows], fetch)
            else:
                cand_scores, cand = src._candidates(q[rows], fetch, selector)
            full = cand[:, -1] >= 0  # FAISS filled the list: more candidates may lie beyond
            if dead is not None:
                cand = np.where(np.isin(cand, dead), -1, cand)
            s, i = self._rerank(q[rows], cand, k, get_vectors, vecs)
            scores[rows], ids[rows] = s, i
            if selector is not None and selector.widen((i >= 0).sum(axis=1)):
                rows = rows[(i >= 0).sum(axis=1) < selector.need]  # probe more lists for these
                continue
            if fetch >= total:
                break
            # Widen where tombstones left fewer than `want` of a full list (asking for `want +
            # len(dropped)` at once made each search re-rank thousands during a catch-up), or where
            # the k-th score ties with the weakest candidate: equal scores may lie beyond.
            short = full & ((cand >= 0).sum(axis=1) < want)
            if self.kind in EXACT_SCORE_KINDS:
                short |= full & (s[:, -1] <= cand_scores[:, -1] + 1e-5)
            rows = rows[short]
            fetch = min(total, 2 * fetch)
        return scores, ids

    def _candidates(
        self, q: np.ndarray, fetch: int, selector: _Selector | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        params = selector.params() if selector is not None else None
        with single_thread(len(q) < SMALL_BATCH):
            if self.codec is not None:
                dist, cand = self.index.search(self.codec.encode(q), fetch, params=params)
                return -dist.astype(np.float32), cand  # Hamming: smaller is better
            return self.index.search(q, fetch, params=params)

    def _candidates_with_vectors(
        self, q: np.ndarray, fetch: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, ids, vectors (Q, fetch, d)) of `fetch` candidates per query, for the kinds in
        OWN_VECTOR_KINDS on the CPU, unfiltered (FAISS cannot combine an ID selector with the list
        positions reconstruction uses).

        ivf-flat's inverted lists hold the very float32 vectors the store holds (they are added
        from the same arrays), so its candidates come with their vectors and the re-rank reads
        nothing from SQLite (~0.1 ms of a 1M search).
        """
        with single_thread(len(q) < SMALL_BATCH):
            return self.index.search_and_reconstruct(q, fetch)

    def _rerank(
        self, q: np.ndarray, cand: np.ndarray, k: int, get_vectors: Callable[[np.ndarray], np.ndarray],
        cand_vecs: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Exact top k of the candidates (-1: none); their vectors from `cand_vecs` (Q, fetch, d)
        when the index supplied them, else from `get_vectors`."""
        valid = cand >= 0
        if cand_vecs is not None:
            vecs = cand_vecs[valid].astype(np.float64)
        else:
            uniq, inv = np.unique(cand[valid], return_inverse=True)
            vecs = np.asarray(get_vectors(uniq), np.float64).reshape(len(uniq), q.shape[1])[inv]
        exact = np.full(cand.shape, -np.inf)
        # Row by row in float64 (products of float32 are exact in float64), not a float32 gemv, whose
        # result for a row depends on its position in the matrix: identical vectors must tie.
        rows = np.nonzero(valid)[0]
        exact[valid] = (vecs * q[rows].astype(np.float64)).sum(axis=1)
        key = np.where(valid, cand, np.iinfo(np.int64).max)
        order = np.lexsort((key, -exact), axis=-1)[:, :k]
        s = np.take_along_axis(exact, order, 1)
        i = np.where(np.isfinite(s), np.take_along_axis(cand, order, 1), -1)
        if s.shape[1] < k:  # fewer candidates than k
            pad = k - s.shape[1]
            s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        return s, i

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """What the FAISS index stores of ``vectors``: float32 rows, or a binary kind's codes."""
        x = np.ascontiguousarray(vectors, np.float32)
        return self.codec.encode(x) if self.codec is not None else x

    def set_params(self, **params: int) -> None:
        """Apply search parameters (nprobe, efSearch, rerank) and record them in info."""
        self.info["params"].update(params)
        faiss = faiss_module()
        if "nprobe" in params:
            if self.on_gpu:
                faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", params["nprobe"])
            else:
                faiss.extract_index_ivf(self.index).nprobe = params["nprobe"]
        if "efSearch" in params:
            faiss.downcast_index(self.index.index).hnsw.efSearch = params["efSearch"]


def list_ids(invlists: Any) -> np.ndarray:
    """Every id in a FAISS index's inverted lists, list by list."""
    parts = [
        faiss_module().rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
        for lst in range(invlists.nlist)
        if invlists.list_size(lst)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


class _Selector:
    """FAISS search parameters restricting a search to `allowed` ids (kept alive while in use),
    with the index's own nprobe/efSearch; for IVF, nprobe grows while too few allowed are found."""

    def __init__(self, ann: AnnIndex, allowed: np.ndarray, k: int):
        allowed = np.asarray(allowed, np.int64)
        self.kind = ann.kind
        self.need = min(k, len(allowed))
        self.sel = faiss_module().IDSelectorBatch(allowed)
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
        faiss = faiss_module()
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
