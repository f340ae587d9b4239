"""Indexing throughput: `clipdex index` images/s vs the model's own encode_image, side by side.

    python bench/index.py [--n 300] [--size 4032x3024] [--batch-size 32] [--arch ViT-B-32] [--device auto]

Random weights (speed does not depend on weights). Generates camera-size JPEGs once into a cache
folder, then measures in one run:
  1. model:   open_clip encode_image on already-preprocessed tensors (the ceiling)
  2. clipdex: `clipdex index` end to end (scan, decode, preprocess, encode, SQLite, FAISS), on a
     third of the files and then on all of them in fresh libraries: the difference is the
     throughput past the fixed costs (model load, warm-up, FAISS save), the figure that holds
     for big folders
  3. re-index of the unchanged folder
  4. decode-only (open + draft decode + preprocess, clipdex's threads) and encode-only, each with
     its core-seconds per image (process CPU time / images)
and prints images/s, the ratio clipdex / model, and the ratio of clipdex to the shared-core limit
cores / (decode + encode core-seconds per image) (goal >= 0.9): what the cores could do if every
core-second went to decoding or encoding. The machine's load average is printed with it: on a
shared machine other processes take cores, so the ratio is a lower bound there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """Camera-like JPEGs: smooth colour fields plus noise (so they compress like photos)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = sorted(folder.glob("*.jpg"))
    if len(paths) >= n:
        return paths[:n]
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h:8, 0:w:8]
    for i in range(len(paths), n):
        base = np.stack(
            [
                np.sin(xx / rng.uniform(50, 400) + c) * 90 + np.cos(yy / rng.uniform(50, 400)) * 60 + 128
                for c in range(3)
            ],
            axis=-1,
        )
        small = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        img = small.resize((w, h), Image.BILINEAR)
        noise = rng.integers(-12, 12, size=(h, w, 3), dtype=np.int16)
        arr = np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"photo_{i:04d}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"))[:n]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", default="4032x3024")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None, help="decode threads (default: clipdex chooses)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clipdex-bench-photos"))
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    import torch

    from clipdex.cli.main import cli
    from clipdex.retrieval.decode import default_workers, load_and_preprocess, open_image, ordered_prefetch
    from clipdex.retrieval.embed import encode_image_batch
    from clipdex.retrieval.model_init import init_model
    from clipdex.retrieval.models import load_model, resolve_spec

    t = time.perf_counter()
    photos = make_photos(Path(args.cache) / f"{w}x{h}", args.n, (w, h))
    print(f"{len(photos)} JPEGs {w}x{h} ready ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-"))
    model_dir = init_model(args.arch, work / "model", seed=0)
    lm = load_model(resolve_spec(str(model_dir)), args.device)
    print(f"device: {lm.device}, torch threads: {torch.get_num_threads()}, batch {args.batch_size}")

    # 1. The model alone, on tensors prepared beforehand.
    pixels = torch.stack([lm.preprocess(open_image(p, lm.image_size)) for p in photos[: args.batch_size]])
    encode_image_batch(lm, pixels)  # warm-up
    reps = max(1, len(photos) // args.batch_size)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(reps):
        encode_image_batch(lm, pixels)
    if lm.device.startswith("cuda"):
        torch.cuda.synchronize()
    model_ips = reps * args.batch_size / (time.perf_counter() - t)
    encode_cs = (time.process_time() - c) / (reps * args.batch_size)

    # Decode only: what clipdex's decode threads do per file, nothing encoded.
    workers = args.workers or default_workers()
    t, c = time.perf_counter(), time.process_time()
    for _, r in ordered_prefetch(
        lambda p: load_and_preprocess(p, lm.preprocess, lm.image_size), photos, workers
    ):
        assert not isinstance(r, BaseException), r
    decode_ips = len(photos) / (time.perf_counter() - t)
    decode_cs = (time.process_time() - c) / len(photos)

    # 2. clipdex index end to end (fresh library), 3. unchanged re-index.
    # Index exactly these n files (the cache folder may hold more from an earlier, larger run).
    def index_run(files: list[Path], name: str) -> tuple[float, list[str]]:
        folder = work / f"photos-{name}"
        folder.mkdir()
        for p in files:
            (folder / p.name).symlink_to(p)
        common = ["--library", str(work / f"library-{name}"), "index", str(folder), "--model", str(model_dir)]
        common += ["--quiet", "--batch-size", str(args.batch_size), "--device", args.device]
        if args.workers:
            common += ["--workers", str(args.workers)]
        t = time.perf_counter()
        cli.main(common, standalone_mode=False)
        return time.perf_counter() - t, common

    # A third of the files first: the difference between the two runs is the pipeline's throughput
    # with the fixed costs (model load, warm-up, FAISS save: ~1 s) cancelled out.
    third = photos[: len(photos) // 3]
    third_s, _ = index_run(third, "third")
    index_s, common = index_run(photos, "all")
    clipdex_ips = len(photos) / index_s
    marginal_ips = (len(photos) - len(third)) / max(1e-9, index_s - third_s)
    t = time.perf_counter()
    cli.main(common, standalone_mode=False)
    reindex_s = time.perf_counter() - t

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    on_gpu = lm.device.startswith("cuda")
    # On a GPU the encoder's core-seconds are not the CPU's: the limit is the slower stage.
    limit = min(cores / decode_cs, model_ips) if on_gpu else cores / (decode_cs + encode_cs)
    load = os.getloadavg()
    print(f"{'':24}{'images/s':>10}{'core-s/img':>12}")
    print(f"{'decode only':24}{decode_ips:10.1f}{decode_cs:12.4f}   ({workers} threads)")
    print(f"{'model encode_image':24}{model_ips:10.1f}{encode_cs:12.4f}")
    print(f"{'clipdex index':24}{clipdex_ips:10.1f}{'':12}   ({index_s:.1f} s for {len(photos)} files)")
    rest = len(photos) - len(third)
    print(f"{'  past the fixed costs':24}{marginal_ips:10.1f}{'':12}   (the last {rest} files)")
    print(f"ratio clipdex/model: {clipdex_ips / model_ips:.2f}")
    what = "min(cores/decode, encode)" if on_gpu else "cores/(decode+encode core-s)"
    print(
        f"physical limit {what} = {limit:.1f} img/s on {cores} cores; "
        f"clipdex/limit: {clipdex_ips / limit:.2f} end to end, {marginal_ips / limit:.2f} past the fixed "
        f"costs (goal >= 0.9); "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    if not on_gpu:  # on a shared machine: the cores the encoder actually got (CPU-s per wall-s)
        got = encode_cs * model_ips
        eff = got / (decode_cs + encode_cs)
        print(
            f"  with the {got:.2f} cores the encoder got meanwhile: limit {eff:.1f} img/s, "
            f"clipdex/limit {clipdex_ips / eff:.2f} end to end, {marginal_ips / eff:.2f} past the fixed costs"
        )
    print(f"re-index, nothing changed: {reindex_s:.2f} s")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
