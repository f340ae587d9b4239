"""Indexing videos: speed, memory and what merging saves.

    python bench/video.py [--arch ViT-B-32] [--short 30] [--long 600] [--size 640x360] [--fps 25]

Synthetic "typical footage" written with PyAV (H.264): a scene change every 6 s, each scene a
slowly panning picture with a moving block, plus a static stretch (a third of the video). Then,
each in a fresh `clipdex index` process (random-init ARCH, torch runtime, 2 s interval):

1. speed: video-seconds indexed per wall-second (the long video, past start-up: its run minus the
   short video's run, over their length difference), and frames encoded per second there divided
   by the model's own encode rate (`encode_pictures` on the same number of 224-px pictures,
   in-process, side by side);
2. memory: peak RSS of the run on the long video vs on the short one (goal: within 300 MB);
3. items per minute of footage before merging (frames kept) and after (moments stored);
4. the same videos through `clipdex embed` (in-process, a fresh process each): speed and peak RSS
   long vs short, and whether its rows are `index`'s moments (same count).
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def footage(path: Path, seconds: int, size: tuple[int, int], fps: int, seed: int = 0) -> Path:
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    static_from, static_to = seconds // 3, 2 * seconds // 3
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        base = None
        for n in range(seconds * fps):
            t = n / fps
            if n % (6 * fps) == 0 and not static_from <= t < static_to or base is None:
                small = rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)
                base = np.asarray(Image.fromarray(small).resize((w * 2, h)))
            shift = 0 if static_from <= t < static_to else int(t * 8) % w
            pic = base[:, shift : shift + w].copy()
            if not static_from <= t < static_to:
                x = int((t * 40) % (w - 40))
                pic[h // 2 - 20 : h // 2 + 20, x : x + 40] = 255
            frame = av.VideoFrame.from_ndarray(pic, format="rgb24")
            frame.pts, frame.time_base = n, fractions.Fraction(1, fps)
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def _run(args: list[str]) -> tuple[float, int, dict]:
    """(wall s, peak RSS bytes, its --json line) of one clipdex command in a fresh process."""
    env = {**os.environ, "CLIPDEX_RUNTIME": "torch", "PYTHONPATH": str(HERE.parent)}
    argv = [sys.executable, "-m", "clipdex.cli.main", *args, "--json", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(err.decode())
    return wall, usage.ru_maxrss * 1024, json.loads(out.decode().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--short", type=int, default=30)
    ap.add_argument("--long", type=int, default=600)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--fps", type=int, default=25)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    from clipdex.retrieval.model_init import init_model

    root = Path(tempfile.mkdtemp(prefix="clipdex-bench-video-"))
    model = init_model(args.arch, root / "model", seed=0)
    runs, embeds = {}, {}
    for name, seconds in (("short", args.short), ("long", args.long)):
        folder = root / name
        folder.mkdir()
        t0 = time.perf_counter()
        footage(folder / f"{name}.mp4", seconds, size, args.fps)
        print(f"wrote {seconds} s of {args.size}@{args.fps} footage in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)  # fmt: skip
        lib = ["--library", str(root / f"lib-{name}"), "index", str(folder)]
        runs[name] = (seconds, *_run([*lib, "--model", str(model)]))
        emb = ["embed", str(folder), "--out", str(root / f"emb-{name}")]
        embeds[name] = (seconds, *_run([*emb, "--model", str(model)]))
    (s_len, s_wall, s_rss, s_out), (l_len, l_wall, l_rss, l_out) = runs["short"], runs["long"]
    kept = {name: seconds / 2.0 for name, (seconds, *_) in runs.items()}  # a frame every 2 s (the first too)
    # the model's own rate on as many pictures as the long video's extra frames
    from clipdex.retrieval.encoders import TorchEncoder
    from clipdex.retrieval.models import load_model, resolve_spec

    enc = TorchEncoder(load_model(resolve_spec(str(model)), device="cpu"))
    from PIL import Image

    rng = np.random.default_rng(1)  # 224 x 398: a 16:9 frame as indexing scales it
    pics = [Image.fromarray(rng.integers(0, 256, (224, 398, 3), dtype=np.uint8)) for _ in range(64)]
    enc.encode_pictures(pics[:8])  # warm-up
    n_own = int(kept["long"] - kept["short"])
    t0 = time.perf_counter()
    for start in range(0, n_own, 32):
        enc.encode_pictures(pics[: min(32, n_own - start)])
    own_rate = n_own / (time.perf_counter() - t0)
    rate_s = (l_len - s_len) / (l_wall - s_wall)
    frames_rate = (kept["long"] - kept["short"]) / (l_wall - s_wall)
    print(f"index {s_len} s video: {s_wall:.1f} s wall, peak RSS {s_rss / 2**20:.0f} MB, {s_out}")
    print(f"index {l_len} s video: {l_wall:.1f} s wall, peak RSS {l_rss / 2**20:.0f} MB, {l_out}")
    print(f"speed past start-up: {rate_s:.1f} video-seconds per wall-second")
    print(f"frames encoded/s while indexing {frames_rate:.1f} / model alone {own_rate:.1f} img/s"
          f" = {frames_rate / own_rate:.2f}")  # fmt: skip
    print(f"peak RSS long - short: {(l_rss - s_rss) / 2**20:+.0f} MB (goal: within 300 MB)")
    for name, (seconds, _, _, out) in runs.items():
        print(f"items per minute ({name}): {kept[name] * 60 / seconds:.1f} frames kept,"
              f" {out['frames'] * 60 / seconds:.1f} after merging")  # fmt: skip
    (_, es_wall, es_rss, es_out), (_, el_wall, el_rss, el_out) = embeds["short"], embeds["long"]
    print(f"embed {s_len} s video: {es_wall:.1f} s wall, peak RSS {es_rss / 2**20:.0f} MB, {es_out}")
    print(f"embed {l_len} s video: {el_wall:.1f} s wall, peak RSS {el_rss / 2**20:.0f} MB, {el_out}")
    e_rate = (l_len - s_len) / (el_wall - es_wall)
    print(f"embed speed past start-up: {e_rate:.1f} video-seconds per wall-second (index: {rate_s:.1f});"
          f" peak RSS long - short {(el_rss - es_rss) / 2**20:+.0f} MB")  # fmt: skip
    same = all(embeds[n][3]["frames"] == runs[n][3]["frames"] for n in runs)
    print(f"embed rows = index moments for both videos: {same}")


if __name__ == "__main__":
    main()
