"""Search benchmark: clipdex.index.ann against numpy brute force (what rclip does), by hand.

Data: clustered unit vectors (a Gaussian mixture on the sphere: n/100 centres, 1,000 to 10,000;
point = centre + noise, normalised). Queries come from the same mixture but are not in the index.
For each size: recall@10 against exact search, single-query latency p50/p99 through
`AnnIndex.search` (exact re-rank included), the same for `X @ q` + argpartition, build time and
index memory per vector. At the smallest size also the compact codes (sq8, fp16, binary).

    .venv/bin/python bench/search.py --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from clipdex.index import ann as A


def mixture(n: int, nq: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) data and (nq, d) queries from one mixture, made in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    nc = int(min(10_000, max(1_000, n // 100)))
    centres = rng.standard_normal((nc, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n + nq, d), np.float32)
    for s in range(0, n + nq, 100_000):
        e = min(n + nq, s + 100_000)
        noise = rng.standard_normal((e - s, d), np.float32)
        x = centres[rng.integers(0, nc, e - s)] + 0.8 / np.sqrt(d) * noise
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out[:n], out[n:]


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = x @ q
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def latency(fn, queries: np.ndarray) -> tuple[float, float]:
    """p50, p99 in ms of fn(query) one query at a time, after a short warm-up."""
    for q in queries[:5]:
        fn(q)
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kinds", default="", help="extra forced kinds at every size, e.g. ivf-pq,hnsw")
    ap.add_argument("--compact", default="sq8,fp16,binary", help="forced kinds at the smallest size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    k = 10
    rows = []
    for n in sizes:
        t = time.perf_counter()
        x, q = mixture(n, args.queries, args.dim, args.seed)
        rng = np.random.default_rng(args.seed)
        ids = np.cumsum(rng.integers(1, 4, n)).astype(np.int64)  # sparse, ascending, like row ids

        def get_vectors(want: np.ndarray, x=x, ids=ids) -> np.ndarray:
            return x[np.searchsorted(ids, want)]

        truth = np.array([ids[brute_force(x, qq, k)] for qq in q])
        np_p50, np_p99 = latency(lambda qq, x=x: brute_force(x, qq, k), q)
        print(f"n={n}: data {time.perf_counter() - t:.0f}s, numpy p50 {np_p50:.2f} ms", flush=True)
        kinds = ["auto", *[s for s in args.kinds.split(",") if s]]
        if n == min(sizes):
            kinds += [s for s in args.compact.split(",") if s]
        for kind in kinds:
            ann = A.build(x, ids, kind, seed=args.seed)
            _, found = ann.search(q, k, get_vectors)
            recall = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, truth)])
            p50, p99 = latency(lambda qq, ann=ann: ann.search(qq, k, get_vectors), q)
            info = ann.info
            rows.append(
                (n, f"{ann.kind}{' (auto)' if kind == 'auto' else ''}", info["params"], info["build_seconds"],
                 info["tune_seconds"], info["bytes_per_vector"], info["recall_at_10"], recall, p50, p99,
                 np_p50, np_p99)
            )  # fmt: skip
            print(f"  {ann.kind}: {info}", flush=True)
            del ann
        del x
    head = ("n", "index", "params", "build s", "tune s", "B/vec", "R@10 tuned", "R@10 held-out",
            "p50 ms", "p99 ms", "numpy p50", "numpy p99", "p50 speedup")  # fmt: skip
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n, kind, params, b, tu, bpv, rt, r, p50, p99, np50, np99 in rows:
        p = ", ".join(f"{a}={v}" for a, v in params.items()) or "-"
        print(
            f"| {n:,} | {kind} | {p} | {b:.1f} | {tu:.1f} | {bpv} | {rt:.3f} | {r:.3f}"
            f" | {p50:.2f} | {p99:.2f} | {np50:.2f} | {np99:.2f} | {np50 / p50:.1f}x |"
        )


if __name__ == "__main__":
    main()
