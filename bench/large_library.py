"""Large-library mode through the user's path: import a shard folder, then search by vector.

    python bench/large_library.py [--n 5000000] [--dim 512] [--shard 250000] [--queries 200]
                                  [--index-type auto] [--dir DIR] [--keep]

Writes N synthetic vectors as a SHARD_DIR in clip-retrieval's layout (float16 ``img_emb/*.npy`` +
``metadata/*.parquet``), then ``Library.import_embeddings(DIR)`` (what ``clipdex import-embeddings
DIR`` calls) on a new library whose model is a random-init tiny open_clip model of that dimension
(no download). With ``--index-type auto`` the library goes to large-library mode when the float32
vectors exceed the memory budget (a quarter of RAM; 5M x 512 = 10 GB does here). Then a fresh
``Library`` answers ``Library.search(vector=q, k=10)`` for held-out queries of the same
distribution, one at a time, against exact search over the stored (float16) vectors.

Data as in bench/search.py (hard: a 24-d Gaussian mixture projected to DIM + isotropic noise),
made shard by shard. Prints the time of each stage, bytes per vector on disk and in RAM (resident
growth of a fresh process-level Library after opening and its first search), p50/p99 and
recall@10, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss() -> np.ndarray:
    """(anonymous, file-backed) resident bytes: the process's own memory, and mapped file pages
    it touched (page cache: clean, shared, reclaimable under memory pressure)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return np.array([int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile")])


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class PeakAnon:
    """The highest RssAnon (the process's own memory, no mapped file pages) seen every 0.2 s."""

    def __init__(self):
        import threading

        self.peak, self.done = 0, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, int(rss()[0]))

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return max(self.peak, int(rss()[0]))


class Mixture:
    """bench/search.py's hard mixture, drawn in pieces: fixed centres and projection, fresh rows."""

    def __init__(self, n: int, dim: int, latent: int = 24, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.nc = max(50, n // 200)
        self.centres = rng.standard_normal((self.nc, latent)).astype(np.float32)
        self.proj = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
        self.latent, self.dim = latent, dim

    def draw(self, m: int, rng: np.random.Generator) -> np.ndarray:
        z = self.centres[rng.integers(0, self.nc, m)] + 0.7 * rng.standard_normal(
            (m, self.latent), np.float32
        )
        x = z @ self.proj + 0.6 * rng.standard_normal((m, self.dim), np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_shards(root: Path, mix: Mixture, n: int, shard: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for sub in ("img_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(range(0, n, shard)):
        m = min(shard, n - s)
        x = mix.draw(m, np.random.default_rng(1000 + i)).astype(np.float16)
        np.save(root / "img_emb" / f"img_emb_{i:05d}.npy", x)
        paths = pa.array([f"/archive/{j // 1000:05d}/{j:09d}.jpg" for j in range(s, s + m)])
        pq.write_table(pa.table({"path": paths}), root / "metadata" / f"metadata_{i:05d}.parquet")


def tiny_model(root: Path, dim: int) -> Path:
    from clipdex.retrieval.model_init import init_model

    cfg = {
        "embed_dim": dim,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
    (root / "model.json").write_text(json.dumps(cfg))
    return init_model(str(root / "model.json"), root / "model", seed=0)


def exact(store, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids over the stored vectors (what the library scores), streamed by chunks."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for ids, vecs in store.vectors.iter("image"):
        s = queries @ vecs.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        cs = np.hstack([best_s, np.take_along_axis(s, top, 1)])
        ci = np.hstack([best_i, ids[top]])
        order = np.argsort(-cs, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cs, order, 1), np.take_along_axis(ci, order, 1)
    return best_i


def search_only(root: Path) -> None:
    """The query phase, in a process of its own; prints one JSON line."""
    import faiss  # noqa: F401  (its libraries are not the library's cost)

    from clipdex import Library

    queries = np.load(root / "queries.npy")
    before = rss()
    t = time.perf_counter()
    lib = Library.open(root / "lib")
    lib.search(vector=queries[0], k=10)
    t_open = time.perf_counter() - t
    for q in queries[1:11]:  # warm-up
        lib.search(vector=q, k=10)
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        hits = lib.search(vector=q, k=10)
        times.append(time.perf_counter() - t)
        found.append([h.id for h in hits])
    ram = (rss() - before).tolist()  # before the exact scan below, which reads every vector
    truth = exact(lib.store, queries, 10)
    recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))
    ms = np.array(times) * 1e3
    print(json.dumps({"open_s": t_open, "ram": ram, "p50": float(np.percentile(ms, 50)),
                      "p99": float(np.percentile(ms, 99)), "recall": recall}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shard", type=int, default=250_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--index-type", default="auto")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--search-only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.search_only:
        return search_only(Path(args.search_only))
    from clipdex import Library
    from clipdex.index.faiss.policy import default_memory_budget

    root = Path(args.dir or tempfile.mkdtemp(prefix="clipdex-large-"))
    root.mkdir(parents=True, exist_ok=True)
    n, d = args.n, args.dim
    budget = default_memory_budget() / 2**30
    print(f"n={n:,} d={d} shards of {args.shard:,} in {root}; memory budget {budget:.1f} GiB; "
          f"float32 vectors {n * d * 4 / 2**30:.1f} GiB; load {load()}", flush=True)  # fmt: skip
    try:
        t = time.perf_counter()
        mix = Mixture(n, d)
        write_shards(root / "emb", mix, n, args.shard)
        queries = mix.draw(args.queries, np.random.default_rng(7))
        model = tiny_model(root, d)
        print(f"synthetic shards: {time.perf_counter() - t:.0f} s", flush=True)

        lib = Library.open(root / "lib", create=True, model=f"local-dir:{model}")
        watch = PeakAnon()
        t = time.perf_counter()
        counts = lib.import_embeddings(
            root / "emb", index_type=None if args.index_type == "auto" else args.index_type
        )
        t_import = time.perf_counter() - t
        peak_anon = watch.stop()
        about = lib.info()
        lib.close()
        idx = about["indexes"]["images"]
        stages = idx.get("stage_seconds", {})
        build = idx.get("build_seconds", 0.0)
        print(f"import-embeddings: {t_import:.0f} s for {counts.imported:,} rows (mode {about['mode']}, "
              f"index {idx['type']}); of it index build {build:.0f} s = train {stages.get('train', 0):.0f} s "
              f"+ fill {stages.get('fill', 0):.0f} s + merge {stages.get('merge', 0):.0f} s + tune "
              f"{build - sum(stages.values()):.0f} s; rows into SQLite + links {t_import - build:.0f} s; "
              f"load {load()}", flush=True)  # fmt: skip
        print(f"index params {idx['params']}, tuned recall@10 {idx.get('recall_at_10')}", flush=True)

        np.save(root / "queries.npy", queries)
        # The searches run in a fresh process: its resident growth is what opening the library costs.
        out = subprocess.run([sys.executable, __file__, "--search-only", str(root)], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        s = json.loads(out.strip().splitlines()[-1])

        folder = root / "lib"
        index_files = sum(p.stat().st_size for p in folder.glob("images*"))
        vectors = (
            sum(p.stat().st_size for p in (folder / "vectors").glob("*.npy"))
            if (folder / "vectors").is_dir()
            else 0
        )
        db = sum(p.stat().st_size for p in folder.glob("clipdex.db*"))
        print(
            f"disk per vector: index {index_files / n:.1f} B (lists, ids, small file), vectors "
            f"{vectors / n:.0f} B (float16; hard links of the shards, no second copy), SQLite {db / n:.0f} B"
        )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        peak_anon /= 2**30
        anon, mapped = s["ram"]
        print(f"RAM (fresh process, after opening and {len(queries) + 11} searches, open + first search "
              f"{s['open_s']:.2f} s): own memory +{anon / 2**20:.0f} MiB = {anon / n:.1f} B/vector "
              f"(index info: {idx['bytes_per_vector']} B/vector by design), mapped file pages touched "
              f"+{mapped / 2**20:.0f} MiB (page cache: shared, reclaimable; the kernel maps up to 64 KB "
              f"around each row read); importing process: peak own memory {peak_anon:.2f} GiB, peak "
              f"RSS with mapped pages {peak:.1f} GiB")  # fmt: skip
        print(
            f"Library.search(vector=…, k=10), one at a time: p50 {s['p50']:.2f} ms, "
            f"p99 {s['p99']:.2f} ms; recall@10 vs exact {s['recall']:.3f} ({len(queries)} queries)"
        )
        print(f"load {load()}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
