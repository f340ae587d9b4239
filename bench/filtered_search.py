"""Filtered search at scale: `Library.search(vector=…, filter=Filter(under=…))` latency against
the same search unfiltered, and recall@10 against brute force over the matching items.

    python bench/filtered_search.py [--n 200000] [--dim 512] [--queries 100]

Data: clustered unit vectors (bench/_planted.mixture) imported as images in a folder tree
/p/a/b/c/d/ (a, b, c, d digits), so `--under` one folder keeps 10%, 1%, 0.1% or 0.01% of the
items, five top folders 50%, all ten 100% (a filter that keeps everything still goes through the
filter path). Queries come from the same mixture. At n > 150k x 512 the index is IVF (auto).
Printed per selectivity: matching items, p50/p99 ms filtered vs unfiltered and their ratio,
recall@10 of the filtered results against exact search over the matching items.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _planted import import_library, mixture  # noqa: E402


def p50_p99(fn, queries) -> tuple[float, float, list]:
    for q in queries[:3]:
        fn(q)
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("-k", type=int, default=10)
    args = ap.parse_args()
    data = mixture(args.n + args.queries, args.dim, seed=0)
    x, queries = data[: args.n], data[args.n :]
    i = np.arange(args.n)
    parts = np.stack([i % 10, (i // 10) % 10, (i // 100) % 10, (i // 1000) % 10], axis=1)
    paths = [f"/p/{a}/{b}/{c}/{d}/img{n}.jpg" for n, (a, b, c, d) in enumerate(parts.tolist())]
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-filter-"))
    try:
        t = time.perf_counter()
        lib_dir = import_library(work, x, paths)
        print(f"{args.n} x {args.dim} vectors imported in {time.perf_counter() - t:.1f} s")
        from clipdex import Filter
        from clipdex.library import Library

        with Library.open(lib_dir) as lib:
            ids, _ = lib.store.vectors.all("image")  # row r of x has id ids[r] (imported in order)
            print(f"index: {lib.indexes.get('image').info['type']}")
            base50, base99, _ = p50_p99(lambda q: lib.search(vector=q, k=args.k), queries)
            print(f"unfiltered: p50 {base50:.1f} ms, p99 {base99:.1f} ms")
            heads = ("keeps", "matching", "p50 ms", "p99 ms", "p50 ratio", "recall@10")
            print(" ".join(f"{h:>9}" for h in heads))
            cases = [("100%", [f"/p/{a}" for a in range(10)]), ("50%", [f"/p/{a}" for a in range(5)]),
                     ("10%", ["/p/3"]), ("1%", ["/p/3/4"]), ("0.1%", ["/p/3/4/5"]),
                     ("0.01%", ["/p/3/4/5/6"])]  # fmt: skip
            for label, roots in cases:
                mask = np.zeros(args.n, bool)
                for r in roots:
                    levels = [int(c) for c in r.split("/")[2:]]
                    mask |= (parts[:, : len(levels)] == levels).all(axis=1)
                f = Filter(under=roots)
                p50, p99, results = p50_p99(lambda q, f=f: lib.search(vector=q, k=args.k, filter=f), queries)
                sub, sub_ids = x[mask], ids[mask]
                recalls = []
                for q, res in zip(queries, results):
                    s = sub @ q
                    top = sub_ids[np.argsort(-s)[: args.k]]
                    recalls.append(len({h.id for h in res} & set(top.tolist())) / len(top))
                print(f"{label:>9} {int(mask.sum()):>9} {p50:>9.1f} {p99:>9.1f} {p50 / base50:>9.2f} "
                      f"{np.mean(recalls):>9.3f}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
