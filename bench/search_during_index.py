"""Search latency while another process writes (goal: busy p50 <= 3x idle p50).

    python bench/search_during_index.py [--n 1000000] [--dim 512] [--images 3000] [--queries 300]

Builds a library of N clustered unit vectors (import-embeddings, in-process) whose model is a
random-init local-dir model of that dimension (no download), then, in one long-lived Library (what
`serve` holds), measures the p50 latency of `Library.search(vector=…, k=10)`:
  idle       nobody writes;
  index      while another process's `clipdex index` adds images (commits a batch every few
             hundred ms, saves its FAISS files at commit points);
  import     while another process's `clipdex import-embeddings` adds --import-n more vectors.
Each search of a busy phase sees the other process's latest commit (a generation read, and a
catch-up from the change log when it moved). Prints the p50s and the busy/idle ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_rows(rng: np.random.Generator, centers: np.ndarray, n: int) -> np.ndarray:
    """Unit vectors around random centres: the cluster structure real embeddings have (on
    structureless noise `auto` rightly prefers an exact scan to IVF)."""
    noise = rng.standard_normal((n, centers.shape[1]), np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.02 * noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_vectors(folder: Path, name: str, n: int, dim: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    centers = unit_rows(np.random.default_rng(99), 2000, dim)
    vec_path = folder / f"{name}.npy"
    arr = np.lib.format.open_memmap(vec_path, mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, 100_000):
        arr[start : start + min(100_000, n - start)] = clustered_rows(rng, centers, min(100_000, n - start))
    arr.flush()
    del arr
    meta = folder / f"{name}.csv"
    meta.write_text("path\n" + "".join(f"/data/{name}/{i:09d}.jpg\n" for i in range(n)))
    return vec_path, meta


def p50_while(lib, queries: np.ndarray, proc: subprocess.Popen | None) -> tuple[float, int]:
    """p50 ms of searches until ``proc`` ends (or all queries, when idle); returns (p50, count)."""
    times = []
    i = 0
    while True:
        q = queries[i % len(queries)]
        t = time.perf_counter()
        lib.search(vector=q, k=10)
        times.append((time.perf_counter() - t) * 1000)
        i += 1
        if proc is None and i >= len(queries):
            break
        if proc is not None and proc.poll() is not None:
            break
    return statistics.median(times), len(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--images", type=int, default=3000, help="Images the busy `index` run adds.")
    ap.add_argument("--import-n", type=int, default=100_000, help="Vectors the busy import adds.")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()

    from PIL import Image

    from clipdex import Library
    from clipdex.retrieval.model_init import init_model

    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-busy-"))
    try:
        cfg = work / "model.json"
        cfg.write_text(json.dumps({
            "embed_dim": args.dim,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
        }))  # fmt: skip
        model = init_model(str(cfg), work / "model", seed=0)
        vecs, meta = write_vectors(work, "base", args.n, args.dim, 0)
        more_vecs, more_meta = write_vectors(work, "more", args.import_n, args.dim, 1)
        rng = np.random.default_rng(2)
        imgs = work / "imgs"
        imgs.mkdir()
        for i in range(args.images):
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(small).resize((48, 48), Image.Resampling.NEAREST).save(imgs / f"{i:05d}.png")
        lib_dir = work / "library"
        t = time.perf_counter()
        with Library.open(lib_dir, create=True, model=f"local-dir:{model}", device="cpu") as lib:
            lib.import_embeddings(vecs, meta)
        print(f"library of {args.n} x {args.dim} built in {time.perf_counter() - t:.0f} s")

        queries = clustered_rows(rng, unit_rows(np.random.default_rng(99), 2000, args.dim), args.queries)
        env = dict(os.environ, PYTHONPATH=str(ROOT), CLIPDEX_LOCK_TIMEOUT="60")
        cli = [sys.executable, "-m", "clipdex.cli.main", "--library", str(lib_dir)]
        with Library.open(lib_dir, device="cpu") as lib:
            lib.search(vector=queries[0], k=10)  # loads the FAISS file
            info = lib.info()["indexes"]["images"]
            print(f"index: {info['type']} {info.get('params')} ntotal={info['ntotal']}")
            idle, n_idle = p50_while(lib, queries, None)
            rows = [("idle", idle, n_idle)]
            for name, command in (
                ("index", ["index", str(imgs), "--quiet", "--workers", "1"]),
                ("import", ["import-embeddings", str(more_vecs), str(more_meta), "--quiet"]),
            ):
                proc = subprocess.Popen(cli + command, env=env)
                busy, n_busy = p50_while(lib, queries, proc)
                if proc.returncode != 0:
                    print(f"{name}: the writer failed (exit {proc.returncode})")
                rows.append((name, busy, n_busy))
            final = lib.info()["images"]
        print(f"{'phase':<8} {'p50 ms':>8} {'searches':>9} {'ratio':>6}")
        for name, p50, n in rows:
            print(f"{name:<8} {p50:8.2f} {n:9d} {p50 / idle:6.2f}")
        print(f"images at the end: {final} (expected {args.n + args.images + args.import_n})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
