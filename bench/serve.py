"""`clipdex serve` under load, by hand: a real server process, HTTP clients, the in-process baseline.

Library: N small generated JPEGs whose vectors are imported (`import-embeddings`: clustered unit
vectors in the model's space), so building it takes seconds; the model is a random-init ViT-B-32
(the default architecture: a realistic text-encoding cost, no download).

1. One client (one kept-alive connection), the same text queries alternately through
   `GET /api/search` and in-process `Library.search` -> p50 of each and their ratio (goal <= 1.3);
   then the same for `/api/items/ID/similar` vs `Library.similar`, which costs a few ms, so a
   fixed per-response cost of the server shows there.
2. C concurrent clients, R mixed requests (text search 50%, similar 20%, thumbnails 30%) ->
   errors, p50/p99 per endpoint, throughput.

    .venv/bin/python bench/serve.py                      # 10k images, 8 clients, 2,000 requests
    .venv/bin/python bench/serve.py --images 2000 --requests 500
    .venv/bin/python bench/serve.py --threads 1          # a busy machine: no OpenMP oversubscription
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

WORDS = ["red", "blue", "green", "small", "large", "old", "shiny", "wooden", "striped", "bright"]
THINGS = ["bicycle", "dog", "house", "car", "beach", "mountain", "cup", "tree", "boat", "street"]


def build(out: Path, n: int, arch: str) -> Path:
    """The benchmark library (reused when it already holds n images)."""
    from PIL import Image

    from clipdex import Library
    from clipdex.retrieval.model_init import init_model

    lib_dir = out / f"lib-{n}"
    model = out / f"model-{arch}"
    if not model.exists():
        init_model(arch, model, seed=0)
    if (lib_dir / "clipdex.db").exists():
        with Library.open(lib_dir) as lib:
            if lib.store.items.count("image") == n:
                return lib_dir
    pics = out / "pics"
    pics.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = pics / f"img_{i:06d}.jpg"
        if not path.exists():
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(small).resize((96, 64), Image.Resampling.NEAREST).save(path, quality=90)
        paths.append(path)
    # Library.open is read-only now; writer_model records the model, so it needs the writer lock
    with Library.open(lib_dir, create=True, model=str(model)) as lib, lib.writing():
        dim = lib.writer_model().embed_dim
        centres = rng.standard_normal((max(10, n // 100), dim)).astype(np.float32)
        noise = rng.standard_normal((n, dim)).astype(np.float32)
        vecs = centres[rng.integers(0, len(centres), n)] + 0.5 * noise
        np.save(out / "vecs.npy", vecs)
        with open(out / "meta.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path"])
            w.writerows([[str(p)] for p in paths])
        lib.import_embeddings(out / "vecs.npy", out / "meta.csv")
    return lib_dir


def start_server(lib_dir: Path) -> tuple[subprocess.Popen, str]:
    argv = [sys.executable, "-m", "clipdex.cli.main", "--library", str(lib_dir), "serve", "--port", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "serving" not in line:
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split(" at ", 1)[1].split()[0].rstrip("/")


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p) * 1e3) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=2_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--ratio-queries", type=int, default=100)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch/OpenMP threads in both processes (0: their default)"
    )
    ap.add_argument("--out", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "clipdex-bench-serve"))
    args = ap.parse_args()
    if args.threads:  # before torch loads; the server process inherits it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import httpx

    from clipdex import Library

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    lib_dir = build(out, args.images, args.arch)
    print(f"library: {args.images} images ({time.perf_counter() - t:.0f} s to build or check)", flush=True)
    queries = [f"a {a} {b}" for a in WORDS for b in THINGS]
    random.Random(0).shuffle(queries)
    proc, url = start_server(lib_dir)
    try:
        with Library.open(lib_dir) as lib, httpx.Client(base_url=url, timeout=60) as client:
            lib.search(text="warm up", k=20)
            client.get("/api/search", params={"q": "warm up", "k": 20}).raise_for_status()
            ids = [int(i) for i in lib.store.vectors.all("image")[0]]
            # 1. one client: server vs in-process, the same queries alternately
            server, local = [], []
            for q in queries[: args.ratio_queries]:
                s = time.perf_counter()
                client.get("/api/search", params={"q": q, "k": 20}).raise_for_status()
                server.append(time.perf_counter() - s)
                s = time.perf_counter()
                lib.search(text=q, k=20)
                local.append(time.perf_counter() - s)
            # 1b. the same for "similar" (a few ms, no model): a fixed per-response cost that a
            # text query's encoding hides shows here (issue 16: a 40 ms Nagle/delayed-ACK stall)
            server_sim, local_sim = [], []
            for item in random.Random(2).sample(ids, min(args.ratio_queries, len(ids))):
                s = time.perf_counter()
                client.get(f"/api/items/{item}/similar", params={"k": 20}).raise_for_status()
                server_sim.append(time.perf_counter() - s)
                s = time.perf_counter()
                lib.similar(item, k=20)
                local_sim.append(time.perf_counter() - s)
        ratio = pct(server, 50) / pct(local, 50)
        ratio_sim = pct(server_sim, 50) / pct(local_sim, 50)
        print(
            f"one client, {len(server)} text queries, k=20: server p50 {pct(server, 50):.2f} ms, "
            f"in-process Library.search p50 {pct(local, 50):.2f} ms -> ratio {ratio:.2f}\n"
            f"one client, {len(server_sim)} similar, k=20: server p50 {pct(server_sim, 50):.2f} ms, "
            f"in-process Library.similar p50 {pct(local_sim, 50):.2f} ms -> ratio {ratio_sim:.2f}",
            flush=True,
        )

        # 2. mixed load
        rng = random.Random(1)
        plan = []
        for i in range(args.requests):
            r = rng.random()
            if r < 0.5:
                plan.append(("search", "/api/search", {"q": queries[i % len(queries)], "k": 20}))
            elif r < 0.7:
                plan.append(("similar", f"/api/items/{rng.choice(ids)}/similar", {"k": 20}))
            else:
                plan.append(("thumbnail", f"/api/items/{rng.choice(ids)}/thumbnail", {}))
        times: dict[str, list[float]] = {"search": [], "similar": [], "thumbnail": []}
        errors: list[str] = []
        lock = threading.Lock()
        cursor = iter(plan)

        def worker() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                while True:
                    with lock:
                        job = next(cursor, None)
                    if job is None:
                        return
                    name, path, params = job
                    s = time.perf_counter()
                    try:
                        r = c.get(path, params=params)
                        ok = r.status_code == 200
                        why = f"{name} {r.status_code} {r.text[:80]}"
                    except httpx.HTTPError as e:
                        ok, why = False, f"{name} {e!r}"
                    took = time.perf_counter() - s
                    with lock:
                        times[name].append(took)
                        if not ok:
                            errors.append(why)

        s = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - s
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"{args.clients} clients, {args.requests} mixed requests in {wall:.1f} s "
          f"({args.requests / wall:.0f} req/s), errors: {len(errors)}")  # fmt: skip
    for name, ts in times.items():
        print(f"  {name:<10} n={len(ts):<5} p50 {pct(ts, 50):7.2f} ms   p99 {pct(ts, 99):7.2f} ms")
    for e in errors[:5]:
        print("  error:", e)
    summary = {
        "images": args.images, "requests": args.requests, "clients": args.clients, "errors": len(errors),
        "ratio_server_over_library_p50": round(ratio, 3),
        "similar_ratio_server_over_library_p50": round(ratio_sim, 3),
        **{f"{n}_p50_ms": round(pct(ts, 50), 2) for n, ts in times.items()},
        **{f"{n}_p99_ms": round(pct(ts, 99), 2) for n, ts in times.items()},
    }  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
