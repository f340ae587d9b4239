"""Component figure for a large-library mode: FAISS IVF-PQ with inverted lists merged on disk.

Not wired into clipdex: this measures FAISS's own on-disk path (the `merge_ondisk` recipe of
faiss/contrib/ondisk.py) on synthetic vectors stored like `clipdex embed`'s shards (float16
.npy files), to give the figures a design for 100M+ items would rest on:

1. train IVF-PQ on a sample; 2. fill one index per shard (``add_with_ids``); 3. merge their
inverted lists into one ``.ivfdata`` file (``OnDiskInvertedLists``); 4. open it memory-mapped and
search, optionally re-ranking the candidates exactly from the memory-mapped float16 shards.

Prints build time per stage, bytes per vector on disk and in RAM (resident set after opening),
single-query p50/p99 and recall@10 against exact search over a query sample.

    .venv/bin/python bench/ondisk.py --n 2000000 --dim 512 --shard 250000
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_shards(root: Path, n: int, d: int, shard: int, seed: int) -> tuple[list[Path], np.ndarray]:
    """Clustered unit vectors (as in bench/search.py) in float16 shards; returns (files, queries)."""
    rng = np.random.default_rng(seed)
    nc = int(min(10_000, max(1_000, n // 100)))
    centres = rng.standard_normal((nc, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        x = centres[rng.integers(0, nc, m)] + 0.8 / np.sqrt(d) * rng.standard_normal((m, d), np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    files = []
    for i, s in enumerate(range(0, n, shard)):
        path = root / f"img_emb_{i:05d}.npy"
        np.save(path, draw(min(shard, n - s)).astype(np.float16))
        files.append(path)
    return files, draw(200)


def exact_top(files: list[Path], q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids (global row numbers) over the float16 shards, shard by shard."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    start = 0
    for f in files:
        x = np.load(f, mmap_mode="r").astype(np.float32)
        s = q @ x.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + start], 1)
        order = np.argsort(-cand_s, 1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
        start += len(x)
    return best_i


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shard", type=int, default=250_000)
    ap.add_argument("--nlist", type=int, default=0, help="default: 4*sqrt(n), a power of two")
    ap.add_argument("--pq", type=int, default=64, help="PQ bytes per vector")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--rerank", type=int, default=100, help="candidates re-ranked exactly (0: none)")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    n, d, k = args.n, args.dim, 10
    nlist = args.nlist or 1 << int(np.log2(4 * np.sqrt(n)))
    root = Path(args.dir or tempfile.mkdtemp(prefix="clipdex-ondisk-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"n={n:,} d={d} nlist={nlist} PQ{args.pq} shards of {args.shard:,} in {root}")

    t = time.perf_counter()
    files, queries = make_shards(root, n, d, args.shard, seed=0)
    print(f"synthetic shards: {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    train_n = min(n, max(30 * nlist, 100_000))
    sample = np.concatenate([np.load(f, mmap_mode="r")[: train_n // len(files) + 1] for f in files])
    index = faiss.index_factory(d, f"IVF{nlist},PQ{args.pq}", faiss.METRIC_INNER_PRODUCT)
    index.train(sample.astype(np.float32))
    faiss.write_index(index, str(root / "trained.index"))
    t_train = time.perf_counter() - t

    t = time.perf_counter()
    start = 0
    for i, f in enumerate(files):  # one independent job per shard (a Ray task each, in a design)
        part = faiss.read_index(str(root / "trained.index"))
        x = np.load(f).astype(np.float32)
        part.add_with_ids(x, np.arange(start, start + len(x), dtype=np.int64))
        faiss.write_index(part, str(root / f"block_{i:05d}.index"))
        start += len(x)
    t_add = time.perf_counter() - t

    t = time.perf_counter()
    from faiss.contrib.ondisk import merge_ondisk

    merged = faiss.read_index(str(root / "trained.index"))
    merge_ondisk(merged, [str(root / f"block_{i:05d}.index") for i in range(len(files))],
                 str(root / "merged.ivfdata"))  # fmt: skip
    faiss.write_index(merged, str(root / "populated.index"))
    del merged
    t_merge = time.perf_counter() - t
    for i in range(len(files)):
        (root / f"block_{i:05d}.index").unlink()

    rss0 = rss_bytes()
    index = faiss.read_index(str(root / "populated.index"))  # its inverted lists: mmap of .ivfdata
    index.nprobe = args.nprobe
    ram = rss_bytes() - rss0
    shards = [np.load(f, mmap_mode="r") for f in files]
    offsets = np.cumsum([0] + [len(s) for s in shards])

    def vectors(ids: np.ndarray) -> np.ndarray:
        which = np.searchsorted(offsets, ids, side="right") - 1
        return np.stack([shards[w][i - offsets[w]] for w, i in zip(which, ids)]).astype(np.float32)

    faiss.omp_set_num_threads(1)
    times, found = [], []
    fetch = max(k, args.rerank)
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search(q[None], fetch)
        ids = ids[0][ids[0] >= 0]
        if args.rerank:
            ids = ids[np.argsort(-(vectors(ids) @ q), kind="stable")]
        times.append(time.perf_counter() - t)
        found.append(ids[:k])
    truth = exact_top(files, queries, k)
    recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)])
    disk = (root / "merged.ivfdata").stat().st_size + (root / "populated.index").stat().st_size
    shard_bytes = sum(f.stat().st_size for f in files)
    ms = np.array(times) * 1e3
    print(f"build: train {t_train:.1f} s (on {len(sample):,}), add {t_add:.1f} s, merge {t_merge:.1f} s")
    print(f"disk: index {disk / n:.1f} B/vector (+ float16 shards {shard_bytes / n:.0f} B/vector)")
    print(f"RAM after opening the index: {ram / n:.2f} B/vector ({ram / 2**20:.0f} MiB); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")  # fmt: skip
    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
    print(f"query (1 thread, nprobe {args.nprobe}, re-rank {args.rerank}): "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, recall@10 {recall:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
