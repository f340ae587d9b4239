"""Indexing and add-texts through ONNX Runtime (fp32, int8) vs torch, side by side in one run.

    python bench/onnx_index.py [--n 192] [--size 4032x3024] [--arch ViT-B-32] [--texts 2000]

Random weights (speed does not depend on them). Camera-size JPEGs (bench/index.py's generator,
cached). The model's graphs are exported once (timed) and copied into each fresh library, so the
`clipdex index` runs measure encoding, not the one-off export. Prints:

1. component figures (labelled): encode_image on prepared pixels by torch, ONNX fp32, ONNX int8;
2. the user's path: `clipdex index` end to end with --runtime torch, --runtime onnx (fp32) and
   --precision int8, on a third of the files and then all of them in fresh libraries (the
   difference is the throughput past the fixed costs), ÷ the model's own torch encode_image
   (goals: fp32 >= 1.0, int8 >= 2.0), and ÷ the shared-core limit cores / (decode + encode
   core-seconds per image), as bench/index.py does;
3. `clipdex add-texts` lines/s in an int8 library ÷ the model's own torch encode_text.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def rate(fn, n: int) -> tuple[float, float]:
    """Items/s and process core-seconds per item of ``fn()`` doing ``n`` items."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return n / (time.perf_counter() - t), (time.process_time() - c) / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=192)
    ap.add_argument("--size", default="4032x3024")
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clipdex-bench-photos"))
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    import numpy as np
    import torch
    from index import make_photos

    from clipdex.cli.main import cli
    from clipdex.library.runtime import graphs_dir
    from clipdex.retrieval.decode import load_and_preprocess, open_image
    from clipdex.retrieval.embed import encode_image_batch, encode_texts
    from clipdex.retrieval.model_init import init_model
    from clipdex.retrieval.models import load_model, resolve_spec
    from clipdex.retrieval.onnx.encoder import OnnxEncoder
    from clipdex.retrieval.onnx.export import export_model
    from clipdex.retrieval.prefetch import default_workers, ordered_prefetch

    photos = make_photos(Path(args.cache) / f"{w}x{h}", args.n, (w, h))
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-onnx-index-"))
    model_dir = init_model(args.arch, work / "model", seed=0)
    spec = resolve_spec(str(model_dir))
    lm = load_model(spec, "cpu")
    graphs = work / "graphs"
    t = time.perf_counter()
    export_model(lm, graphs, int8=True)
    took = time.perf_counter() - t
    print(f"{args.arch}, {len(photos)} JPEGs {w}x{h}; export fp32+int8 graphs: {took:.1f} s")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"torch threads {torch.get_num_threads()}, {cores} cores, load average {os.getloadavg()[0]:.1f}")

    # 1. Components: the encoders on prepared pixels (batch 32), and the decode threads alone.
    # ONNX Runtime first and torch last: once torch has run, its OpenMP threads spin-wait for a
    # while after each op and would steal the cores from ONNX Runtime's own pool.
    enc = {"fp32": OnnxEncoder(graphs, "fp32"), "int8": OnnxEncoder(graphs, "int8")}
    pixels = np.stack([enc["fp32"].preprocess(open_image(p, lm.image_size)) for p in photos[:32]])
    reps = max(2, len(photos) // 32)
    encoders = {
        "onnx fp32": lambda: enc["fp32"].encode_pixels(pixels),
        "onnx int8": lambda: enc["int8"].encode_pixels(pixels),
        "torch": lambda: encode_image_batch(lm, torch.from_numpy(pixels)),
    }
    component = {}
    for name, fn in encoders.items():
        fn()  # warm-up (sessions, allocator)
        component[name] = rate(lambda fn=fn: [fn() for _ in range(reps)], reps * 32)
    workers = default_workers()
    decode_ips, decode_cs = rate(
        lambda: [r for _, r in ordered_prefetch(
            lambda p: load_and_preprocess(p, enc["fp32"].preprocess, lm.image_size), photos, workers
        )], len(photos),
    )  # fmt: skip
    print("component figures (the encoder alone on prepared pixels; not the user's path):")
    print(f"  {'':22}{'images/s':>10}{'core-s/img':>12}{'÷ torch':>9}")
    print(f"  {'decode threads':22}{decode_ips:10.1f}{decode_cs:12.4f}")
    for name, (ips, cs) in component.items():
        print(f"  {'encode ' + name:22}{ips:10.1f}{cs:12.4f}{ips / component['torch'][0]:9.2f}")

    # 2. The user's path: `clipdex index`, graphs already in place.
    def index_run(name: str, files: list[Path], extra: list[str]) -> float:
        folder, lib = work / f"photos-{name}", work / f"lib-{name}"
        folder.mkdir()
        for p in files:
            (folder / p.name).symlink_to(p)
        shutil.copytree(graphs, graphs_dir(lib, spec))
        argv = ["--library", str(lib), "index", str(folder), "--model", str(model_dir), "--quiet", *extra]
        t = time.perf_counter()  # a fresh process each, as the user runs it
        subprocess.run([sys.executable, "-m", "clipdex.cli.main", *argv], check=True, env=env)
        return time.perf_counter() - t

    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    runs = {
        "torch": ["--runtime", "torch"],
        "onnx fp32": ["--runtime", "onnx"],
        "onnx int8": ["--runtime", "onnx", "--precision", "int8"],
    }
    third = photos[: len(photos) // 3]
    print("clipdex index (the user's path), past the fixed costs:")
    print(f"  {'':22}{'images/s':>10}{'÷ torch encode_image':>22}{'÷ shared-core limit':>21}")
    torch_ceiling = component["torch"][0]
    for name, extra in runs.items():
        a = index_run(f"{name}-third".replace(" ", "-"), third, extra)
        b = index_run(name.replace(" ", "-"), photos, extra)
        ips = (len(photos) - len(third)) / max(1e-9, b - a)
        limit = cores / (decode_cs + component[name][1])
        print(f"  {'index ' + name:22}{ips:10.1f}{ips / torch_ceiling:22.2f}{ips / limit:21.2f}"
              f"   ({b:.1f} s end to end for {len(photos)})")  # fmt: skip

    # 3. add-texts in an int8 library vs the model's own encode_text.
    things = ("a dog", "the sea", "two cups", "a red car")
    texts = [f"line {i}: a photo of {things[i % 4]} #{i}" for i in range(args.texts)]
    (work / "texts.txt").write_text("\n".join(texts) + "\n")
    lib = work / "lib-onnx-int8"  # holds int8 vectors already
    t = time.perf_counter()  # in this process, before torch's text encoder runs (see above)
    cli.main(["--library", str(lib), "add-texts", str(work / "texts.txt"), "--quiet"], standalone_mode=False)
    lps = len(texts) / (time.perf_counter() - t)
    encode_texts(lm, texts[:64])
    torch_lps, _ = rate(lambda: encode_texts(lm, texts), len(texts))
    print(f"add-texts int8: {lps:.0f} lines/s; torch encode_text: {torch_lps:.0f} lines/s; "
          f"ratio {lps / torch_lps:.2f} ({len(texts)} lines)")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
