"""Which FAISS index family for a large library: the measurement behind clipdex.index.faiss.policy.

    python bench/ann_families.py [--n 1000000] [--dim 512] [--queries 200]
                                 [--families ivf2sqrt,hier16k,pca64-8k,pca32-16k,pca32-16k-sq8,hnsw]

On bench/_planted.py's hard_mixture (a 24-d latent mixture projected to DIM dims plus noise) and
held-out queries from the same mixture, each family is built (train + add, timed), then searched
one query at a time on one thread (as `Library.search` does) with growing nprobe until recall@10
after an exact re-rank of the candidates reaches 0.95. Printed per family and nprobe: recall,
FAISS p50 (candidates only; the re-rank is the same for all), build seconds, bytes per vector.

  ivf2sqrt       IVF-Flat, 2 sqrt(n) lists, flat quantizer in full dimension (clipdex before)
  hier16k        IVF-Flat, 16k lists, HNSW quantizer, vectors assigned two-level (nearest of
                 sqrt(nlist) groups, then nearest centroid in it): cheap, but misassigns
  hnsw16k        the same lists, vectors assigned by the HNSW quantizer itself (slow add)
  pca64-8k       IVF-Flat, 8k lists, quantizer in a 64-d PCA space
  pca32-16k      IVF-Flat, 16k lists, quantizer in a 32-d PCA space: clipdex's ivf-flat
                 (built by clipdex.index.faiss.build itself)
  pca32-16k-sq8  the same lists with 8-bit scalar-quantised codes (re-rank of 2k + 10)
  hnsw           HNSW32 over the vectors, built on 100k of them (build time scaled to n)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _planted import hard_mixture

K = 10
NPROBES = (16, 24, 32, 48, 64, 80, 96, 128, 192, 256, 384, 512)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--families", default="ivf2sqrt,hier16k,pca64-8k,pca32-16k,pca32-16k-sq8,hnsw")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import os

    import faiss

    from clipdex.index.faiss import build as annbuild
    from clipdex.index.faiss.tuning import exact_top

    n, d = args.n, args.dim
    x = hard_mixture(n, d, 24, 0)
    q = hard_mixture(n + args.queries, d, 24, 0, n)[n:]
    truth = [set(r) for r in exact_top(q, x, K)]
    ids = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(0)
    ip = faiss.METRIC_INNER_PRODUCT
    print(f"n={n:,} dim={d} queries={len(q)} load average {os.getloadavg()[0]:.2f}", flush=True)
    print("| family | build s | nprobe | recall@10 | FAISS p50 ms | bytes/vector |")
    print("|---|---|---|---|---|---|")

    def evaluate(name: str, index, build_s: float, bpv: int, rerank: int = 1, grid=NPROBES) -> None:
        faiss.omp_set_num_threads(1)
        ivf = faiss.extract_index_ivf(index) if not isinstance(index, faiss.IndexHNSWFlat) else None
        for p in grid:
            if ivf is not None:
                ivf.nprobe = p
                quantizer = faiss.downcast_index(ivf.quantizer)
                if isinstance(quantizer, faiss.IndexHNSWFlat):
                    quantizer.hnsw.efSearch = max(p, 64)
            else:
                index.hnsw.efSearch = p
            times, found = [], []
            for i in range(len(q)):
                t = time.perf_counter()
                _, cand = index.search(q[i : i + 1], K * rerank + 10)
                times.append(time.perf_counter() - t)
                cand = cand[0][cand[0] >= 0]
                found.append(set(cand[np.argsort(-(x[cand] @ q[i]))[:K]].tolist()))
            recall = np.mean([len(a & b) / K for a, b in zip(found, truth)])
            print(f"| {name} | {build_s:.1f} | {p} | {recall:.3f} | {np.median(times) * 1e3:.2f} | {bpv} |",
                  flush=True)  # fmt: skip
            if recall >= 0.95:
                break
        faiss.omp_set_num_threads(os.cpu_count() or 1)

    def sample(m: int) -> np.ndarray:
        return x[np.sort(rng.choice(n, min(n, m), replace=False))]

    for fam in args.families.split(","):
        t0 = time.perf_counter()
        if fam == "ivf2sqrt":
            nlist = int(2 * np.sqrt(n))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, ip)
            index.cp.niter = 10
            index.train(sample(40 * nlist))
            index.add_with_ids(x, ids)
            evaluate(fam, index, time.perf_counter() - t0, 4 * d + 8)
        elif fam in ("hier16k", "hnsw16k"):
            train = sample(320_000)
            k1 = 128
            c1 = annbuild._kmeans(train, k1, 0)
            groups = faiss.knn(train, c1, 1)[1][:, 0]
            parts, owner = [], []
            for g in range(k1):
                tg = np.ascontiguousarray(train[groups == g])
                kg = min(len(tg), max(1, round(16_384 * len(tg) / len(train))))
                if kg:
                    parts.append(annbuild._kmeans(tg, kg, g) if kg > 1 else tg.mean(0, keepdims=True))
                    owner += [g] * len(parts[-1])
            c2, owner = np.vstack(parts).astype(np.float32), np.array(owner)
            quantizer = faiss.IndexHNSWFlat(d, 32)
            quantizer.hnsw.efConstruction = 40
            quantizer.add(c2)
            index = faiss.IndexIVFFlat(quantizer, d, len(c2), ip)
            index.is_trained = True
            if fam == "hnsw16k":
                quantizer.hnsw.efSearch = 32
                index.add_with_ids(x, ids)
            else:
                members = [np.nonzero(owner == g)[0] for g in range(k1)]
                assign = np.empty(n, np.int64)
                for s in range(0, n, 65_536):
                    xb = x[s : s + 65_536]
                    top = faiss.knn(xb, c1, 1)[1][:, 0]
                    for g in np.unique(top):
                        rows = np.nonzero(top == g)[0]
                        dist = faiss.pairwise_distances(xb[rows], c2[members[g]])
                        assign[s + rows] = members[g][np.argmin(dist, axis=1)]
                index.add_core(n, faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
            evaluate(fam, index, time.perf_counter() - t0, 4 * d + 8)
        elif fam.startswith("pca"):
            coarse, nlist = (64, 8192) if fam.startswith("pca64") else (32, 16_384)
            train = sample(20 * nlist)
            quantizer, nlist, _ = annbuild._coarse_quantizer(train, nlist, coarse, 0)
            if fam.endswith("sq8"):
                index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
                index.by_residual = False
                index.train(train[:50_000])
                bpv, rerank = d + 8, 2
            else:
                index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
                index.train(train[:1])
                bpv, rerank = 4 * d + 8, 1
            index.add_with_ids(x, ids)
            evaluate(fam, index, time.perf_counter() - t0, bpv, rerank)
        elif fam == "hnsw":
            m = min(n, 100_000)
            index = faiss.IndexHNSWFlat(d, 32, ip)
            index.hnsw.efConstruction = 40
            index.add(x[:m])
            scaled = (time.perf_counter() - t0) * n / m
            print(f"| hnsw (built on {m:,}, time x{n / m:.0f}) | {scaled:.0f} | - | - | - | {4 * d + 264} |")
        else:
            print(f"unknown family {fam!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
