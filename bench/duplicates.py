"""`clipdex duplicates` at scale: 100k stored 512-d image vectors grouped (goal: under a minute on
2 cores), with planted near-duplicate groups as the truth.

    python bench/duplicates.py [--n 100000] [--dim 512] [--groups 2000] [--threshold 0.95]

Data: clustered unit vectors (bench/_planted.mixture) plus `--groups` planted groups of 2-5 noisy
copies of one vector (cosine to each other ~0.97-0.99), imported into a new library. Timed: a
fresh `Library.duplicates(threshold)` (reading the vectors from SQLite, the batch k-NN, the
union-find, the group records). Printed: seconds, groups found, pair precision/recall vs planted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _planted import import_library, mixture  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--threshold", type=float, default=0.95)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    sizes = rng.integers(2, 6, args.groups)
    planted_n = int(sizes.sum())
    base = mixture(args.n - planted_n + args.groups, args.dim, seed=0)
    heads, base = base[-args.groups :], base[: -args.groups]  # each group: copies of one unseen vector
    copies = np.repeat(heads, sizes, axis=0) + 0.15 / np.sqrt(args.dim) * rng.standard_normal(
        (planted_n, args.dim), np.float32
    )
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    x = np.vstack([base, copies]).astype(np.float32)
    group_of = np.concatenate([np.full(len(base), -1), np.repeat(np.arange(args.groups), sizes)])
    order = rng.permutation(len(x))
    x, group_of = x[order], group_of[order]
    paths = [f"/photos/{i // 1000}/img{i}.jpg" for i in range(len(x))]
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-dup-"))
    try:
        t = time.perf_counter()
        lib_dir = import_library(work, x, paths)
        took = time.perf_counter() - t
        print(f"{len(x)} x {args.dim} vectors ({args.groups} planted groups) imported in {took:.1f} s")
        from clipdex.library import Library

        t = time.perf_counter()
        with Library.open(lib_dir) as lib:
            groups = lib.duplicates(threshold=args.threshold)
        seconds = time.perf_counter() - t
        row = {p: i for i, p in enumerate(paths)}
        found = {tuple(sorted(pair)) for g in groups for pair in combinations([row[i.path] for i in g], 2)}
        members: dict[int, list[int]] = {}
        for i, gi in enumerate(group_of):
            if gi >= 0:
                members.setdefault(int(gi), []).append(i)
        truth = {tuple(sorted(pair)) for m in members.values() for pair in combinations(m, 2)}
        hit = len(found & truth)
        print(f"duplicates --threshold {args.threshold}: {seconds:.1f} s for {len(x)} images "
              f"(goal < 60 s); {len(groups)} groups found, {args.groups} planted; "
              f"pair precision {hit / max(1, len(found)):.4f}, recall {hit / len(truth):.4f}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
