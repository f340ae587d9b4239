"""`clipdex watch` under load: latency from close to searchable in another process, the watcher's
memory after many events vs few, and its idle CPU on a big tree.

    python bench/watch.py [--model SPEC] [--singles 20] [--burst 10000] [--events 100000]
                          [--tree 100000] [--idle 30]

A `clipdex watch --json` process follows a folder (a random-init ViT-B-32 by default: the default
model's encode cost, no download; ``--model`` for another). This process is the reader: it writes
a picture, notes when the file was closed, and polls `Library.similar(path)` (a search by the
stored vector) until the picture is its first hit.

- single files: one picture at a time, p50/p95 latency (goal p95 <= 3 s with the default model
  on CPU, the encode included);
- burst: ``--burst`` pictures written as fast as possible, per-picture latency p50/p95 (bounded
  by the encode throughput: a CPU encodes ~20-50 ViT-B-32 pictures/s);
- memory: watcher RSS after ~1% of ``--events`` file events vs after all of them (writes and
  deletes of a small file set: no growth per event is the goal; ratio printed);
- idle CPU: CPU seconds the watcher uses over ``--idle`` seconds of quiet, on a tree of ``--tree``
  pictures (symlinks to one file; goal ~0).
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
import threading
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).parents[1]
TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def picture(path: Path, seed: int) -> None:
    Image.new("RGB", (96, 96), ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256)).save(path)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Watch:
    def __init__(self, lib: Path, folder: Path, debounce: float):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "clipdex.cli.main", "--library", str(lib), "watch", str(folder),
                "--json", "--debounce", str(debounce)]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        self.ready = threading.Event()
        threading.Thread(target=self._err, daemon=True).start()
        threading.Thread(target=lambda: [json.loads(x) for x in self.proc.stdout], daemon=True).start()

    def _err(self) -> None:
        for line in self.proc.stderr:
            if "watching" in line:
                self.ready.set()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def searchable(reader, path: Path, timeout: float = 600) -> float:
    """When ``path`` became its own first hit (monotonic seconds)."""
    from clipdex.errors import ClipdexError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            hits = reader.similar(path, k=1)
            if hits and hits[0].path == str(path):
                return time.monotonic()
        except ClipdexError:
            pass
        time.sleep(0.02)
    raise TimeoutError(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default: a random-init ViT-B-32 (no download)")
    ap.add_argument("--singles", type=int, default=20)
    ap.add_argument("--burst", type=int, default=10000)
    ap.add_argument("--events", type=int, default=100000)
    ap.add_argument("--tree", type=int, default=100000)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--debounce", type=float, default=1.0)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from clipdex.library import Library, init_model

    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-watch-"))
    try:
        model = args.model or f"local-dir:{init_model('ViT-B-32', work / 'vit-b-32')}"
        photos, lib_dir = work / "photos", work / "lib"
        photos.mkdir()
        picture(photos / "first.png", 0)
        Library.open(lib_dir, create=True, model=model).index(photos)
        reader = Library.open(lib_dir)
        watch = Watch(lib_dir, photos, args.debounce)
        assert watch.ready.wait(300), "the watcher did not start"
        print(f"machine: {os.cpu_count()} CPUs; model {model}; debounce {args.debounce} s")

        singles = []
        for n in range(args.singles):
            path = photos / f"single-{n}.png"
            picture(path, n + 1)  # closed when save returns
            closed = time.monotonic()
            singles.append(searchable(reader, path) - closed)
        print(f"single files: n={len(singles)} p50 {pct(singles, 0.5):.2f} s  p95 {pct(singles, 0.95):.2f} s")
        few_rss = rss_mib(watch.proc.pid)

        burst_dir = photos / "burst"
        burst_dir.mkdir()
        closed_at = {}
        t0 = time.monotonic()
        for n in range(args.burst):
            path = burst_dir / f"{n:06d}.png"
            picture(path, 1000 + n)
            closed_at[path] = time.monotonic()
        written = time.monotonic() - t0
        lat = [searchable(reader, p) - c for p, c in closed_at.items()]  # in write order: each waits its turn
        took = time.monotonic() - t0
        print(
            f"burst: {args.burst} pictures written in {written:.1f} s, all searchable after {took:.1f} s "
            f"({args.burst / took:.1f}/s); latency p50 {pct(lat, 0.5):.2f} s  p95 {pct(lat, 0.95):.2f} s"
        )

        churn = photos / "churn"
        churn.mkdir()
        rss = {}
        done = 0
        for target in (max(1, args.events // 100), args.events):
            while done < target:  # write and delete 50 small files: ~3 events each
                for n in range(50):
                    (churn / f"c{n}.png").write_bytes(b"x" * (n + done % 7))
                for n in range(50):
                    (churn / f"c{n}.png").unlink()
                done += 150
            time.sleep(args.debounce + 3)
            rss[target] = rss_mib(watch.proc.pid)
        lo, hi = sorted(rss)
        print(
            f"watcher RSS: {few_rss:.0f} MiB after the singles; {rss[lo]:.0f} MiB after ~{lo} events, "
            f"{rss[hi]:.0f} MiB after ~{hi} events (ratio {rss[hi] / rss[lo]:.3f})"
        )
        watch.stop()

        tree = work / "tree"
        for n in range(args.tree):  # a big tree, cheaply: 100 folders of links to one picture
            d = tree / f"d{n // 1000:03d}"
            if n % 1000 == 0:
                d.mkdir(parents=True)
            os.symlink(photos / "first.png", d / f"{n}.png")
        lib2 = work / "lib-tree"  # indexed with a tiny model: idle cost does not depend on the model
        tiny = work / "tiny.json"
        tiny.write_text(json.dumps(TINY))
        Library.open(lib2, create=True, model=f"local-dir:{init_model(str(tiny), work / 'tiny')}").index(tree)
        watch = Watch(lib2, tree, args.debounce)
        assert watch.ready.wait(3600), "the watcher did not start"
        time.sleep(2)
        c0, t0 = cpu_seconds(watch.proc.pid), time.monotonic()
        time.sleep(args.idle)
        used, wall = cpu_seconds(watch.proc.pid) - c0, time.monotonic() - t0
        folders, rss_now = len(list(tree.iterdir())), rss_mib(watch.proc.pid)
        print(
            f"idle: {used:.2f} CPU s over {wall:.0f} s ({100 * used / wall:.2f}% of a core) watching "
            f"{args.tree} pictures in {folders} folders; RSS {rss_now:.0f} MiB"
        )
        watch.stop()
        print(f"stdev of single-file latency: {statistics.pstdev(singles):.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
