"""Index type policy: which FAISS index suits a collection of a size, and what each costs in memory.

`choose_kind` picks from the collection size and a memory budget (a quarter of RAM by default);
`bytes_per_vector` is the arithmetic behind it (and `clipdex info`'s figures); `ivf_layout` shapes
an IVF index (how many lists, in which space vectors are assigned to them); `ivf_lists` is the one
list count every IVF index here uses. Stdlib only: ``clipdex --help`` imports this module.

Chosen by measurement (bench/ann_families.py, 2026-11-28: 1M x 512 hard synthetic data, a 24-d
latent mixture projected to 512-d plus noise; held-out queries one at a time on one thread, nprobe
raised until recall@10 after exact re-rank reaches 0.95; 2-core machine, load ~2.5):

- ivf-flat, 2 sqrt(n) = 2,000 lists, full-d flat quantizer (before): build 41 s, nprobe 64,
  FAISS 2.6 ms. Assigning 1M vectors costs n * nlist * d and grows with the list count.
- 16k lists, HNSW quantizer, vectors assigned two-level (nearest of 128 groups, then nearest
  centroid in it): build 22 s, but misassigned vectors need nprobe 256, 2.4 ms. Assigning by the
  HNSW quantizer itself was ~3x slower than a flat assignment.
- 8k lists, quantizer in a 64-d PCA space: build 39 s, nprobe 96, 1.07 ms. Assignment is exact in
  that space, so the lists a query probes are the lists its neighbours were put in.
- 16k lists, quantizer in a 32-d PCA space: build 15 s (FAISS assigns to <= 32-d centroids with a
  fused kernel, ~8x faster than at 64-d), nprobe 80, 0.50 ms. Chosen (ivf_layout).
- The same with SQ8 codes: 0.38 ms and 520 instead of 2,056 bytes a vector, but its exact re-rank
  reads 30 vectors from SQLite per query, where ivf-flat re-ranks from its own lists.
- HNSW32 over the vectors: ~220 s to build at 1M (22 s for 100k).

On the user's path (bench/search.py, `Library.search` at 1M, the same lists and nprobe 80) the
lists' bytes dominate: a query scans ~5,000 vectors, 10 MB in float32. The same lists in float16
(ivf-fp16, 1,032 bytes a vector) take FAISS 0.33 instead of 0.48 ms, and the exact re-rank reads
the 20 candidates' float32 vectors from SQLite (~0.05 ms): recall@10 0.963 both, the whole search
~0.15 ms faster. Auto picks ivf-fp16; ivf-flat (re-ranks from its own float32 lists) stays
available with --index-type.
"""

from __future__ import annotations

import math
import os

# Built in memory (clipdex.index.faiss.build).
KINDS = ("flat", "ivf-fp16", "ivf-flat", "ivf-pq", "hnsw", "sq8", "fp16", "binary")
IVF_KINDS = ("ivf-fp16", "ivf-flat", "ivf-pq")  # inverted files: nprobe is their search knob
LAYOUT_KINDS = ("ivf-fp16", "ivf-flat")  # lists shaped by ivf_layout (assigned in a PCA space)
ONDISK = "ivf-pq-ondisk"  # large-library mode: float16 vector files + IVF-PQ lists mapped from disk
INDEX_TYPES = (*KINDS, ONDISK)  # what --index-type accepts (besides auto)

# A flat scan costs ~0.1 ms per 1,000 512-d vectors for one query on one core (memory bound:
# ~10 ms at 100k, ~20 ms at 200k, ~200 ms at 1M; bench/search.py). Up to 150k x 512 floats
# (~15 ms) exact search is fast enough and needs no training; beyond it IVF answers in ~1 ms.
FLAT_MAX_FLOATS = 150_000 * 512
MIN_TRAIN = 1_000  # below this an approximate index has nothing to learn from: build flat
# LAYOUT_KINDS assign vectors to lists in a PCA space of this many dims (when the vectors have at
# least 4x as many): the assignment costs n * nlist * COARSE_DIM, a 1M build's largest part.
COARSE_DIM = 32


def default_memory_budget() -> int:
    """``$CLIPDEX_MEMORY_BUDGET`` (bytes), else a quarter of physical memory (4 GiB when unknown):
    room for the index next to everything else."""
    env = os.environ.get("CLIPDEX_MEMORY_BUDGET")
    if env and env.strip().isdigit():
        return int(env)
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
        "ivf-fp16": 2 * dim,
        "hnsw": 4 * dim + 2 * 32 * 4,
        "fp16": 2 * dim,
        "sq8": dim,
        "ivf-pq": pq_m(dim),
        "binary": -(-dim // 8),
        ONDISK: 0,  # codes and ids are mapped from disk: RAM holds only the pages searches touch
    }[kind]
    return code + 8


def ivf_layout(n: int, d: int) -> tuple[int, int]:
    """(nlist, coarse_dim) of an index of LAYOUT_KINDS over n d-dim vectors.

    ~16 sqrt(n) lists (16,000 at 1M: a query probes ~0.6% of the vectors for recall 0.95 on hard
    data, where 2 sqrt(n) lists needed 3%), with >= 39 training points each (faiss's minimum);
    vectors are assigned in a COARSE_DIM PCA space, or in their own space when d < 4 * COARSE_DIM.
    """
    nlist = ivf_lists(n, 16)
    return nlist, (COARSE_DIM if d >= 4 * COARSE_DIM else d)


def ivf_lists(n: int, per_sqrt: int, min_points: int | None = 39) -> int:
    """How many inverted lists an IVF index over ``n`` vectors gets: ``per_sqrt`` sqrt(n), with at
    least ``min_points`` training points each (faiss's minimum is 39) and at least one list;
    ``min_points=None``: ``int(per_sqrt sqrt(n))`` uncapped (the duplicate finder's k-NN, n large).

    The callers' counts: the in-memory ivf-pq 2 sqrt(n), the on-disk index sqrt(n), ivf_layout's
    kinds 16 sqrt(n), the duplicate finder 2 sqrt(n) uncapped. (``math.sqrt`` is correctly
    rounded, as ``np.sqrt`` is, and ``n**0.5`` differs from it by under an ulp: the count, a floor
    of a power-of-two multiple, is the same whichever of them computes the root.)
    """
    lists = int(per_sqrt * math.sqrt(n))
    if min_points is None:
        return lists
    return max(1, min(lists, n // min_points))


def choose_kind(n: int, dim: int, memory_budget: int | None = None) -> str:
    """The index for n vectors of dim: exact while a scan is fast, else IVF; smaller codes if memory is short.

    When the float32 vectors alone exceed the budget (and there are enough to train on), the
    library goes to large-library mode: ivf-pq-ondisk. Otherwise small collections
    (n * dim <= FLAT_MAX_FLOATS) are scanned: flat, else fp16, sq8 or binary codes, whichever first
    fits the budget. Larger ones get an inverted file: ivf-fp16 if its float16 vectors fit, else
    ivf-pq (64 bytes per 512-d vector).
    """
    budget = default_memory_budget() if memory_budget is None else memory_budget

    def fits(kind: str) -> bool:
        return n * bytes_per_vector(kind, dim) <= budget

    if n >= MIN_TRAIN and exceeds_memory(n, dim, budget):
        return ONDISK
    if n * dim <= FLAT_MAX_FLOATS:
        return next((k for k in ("flat", "fp16", "sq8") if fits(k)), "binary")
    return "ivf-fp16" if fits("ivf-fp16") else "ivf-pq"


def exceeds_memory(n: int, dim: int, memory_budget: int | None = None) -> bool:
    """Whether n float32 vectors of dim would not fit the memory budget (large-library mode)."""
    budget = default_memory_budget() if memory_budget is None else memory_budget
    return n * dim * 4 > budget
