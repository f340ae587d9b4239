"""The user's cold path with ONNX Runtime: `clipdex search` in a fresh process, graphs vs torch.

    python bench/onnx_search.py [--arch ViT-B-32] [--repeat 5] [--queries 50]

Builds a small library (generated images, random-init ARCH) once and exports its graphs
(`clipdex model export-onnx`, timed). Then, side by side in one run, alternating so background
load hits all alike:

- cold `clipdex search` with the graphs (runtime auto: ONNX, no torch imported),
- cold `clipdex search --runtime torch`,
- a bare `python -c "import torch, open_clip"`,

and prints medians and the ratios onnx ÷ import and onnx ÷ torch search, with each process's peak
RSS (the onnx search should be smaller by about the size of torch). Then warm text-query
encoding through `Library.encode_texts` (one query at a time, the path `serve` and `Library.search`
take): ONNX p50 ÷ torch p50.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one process running ``cmd``.

    The process is started by GNU time, not forked from this one: a child forked from this big
    process would report this process's RSS as its own peak.
    """
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env, text=True, check=True)  # fmt: skip
    return time.perf_counter() - t, int(out.stderr.strip().splitlines()[-1]) / 1024  # KiB


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from PIL import Image

    from clipdex import Library
    from clipdex.cli.main import cli
    from clipdex.retrieval.model_init import init_model

    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-onnx-"))
    imgs = work / "imgs"
    imgs.mkdir()
    for i in range(16):
        Image.new("RGB", (256, 256), (15 * i, 90, 240 - 15 * i)).save(imgs / f"{i}.png")
    model = init_model(args.arch, work / "model", seed=0)
    lib = str(work / "lib")
    index = ["--library", lib, "index", str(imgs), "--model", str(model), "--quiet", "--runtime", "torch"]
    cli.main(index, standalone_mode=False)  # torch: the export is timed on its own below
    t = time.perf_counter()
    cli.main(["--library", lib, "model", "export-onnx"], standalone_mode=False)
    print(f"export-onnx ({args.arch}): {time.perf_counter() - t:.1f} s")

    py = sys.executable
    clipdex = [py, "-m", "clipdex.cli.main", "--library", lib, "search", "a photo of a dog", "-k", "3"]
    runs: dict[str, list[tuple[float, float]]] = {
        "search (onnx)": [],
        "search --runtime torch": [],
        "import torch, open_clip": [],
    }
    for _ in range(args.repeat):
        runs["search (onnx)"].append(timed(clipdex))
        runs["search --runtime torch"].append(timed([*clipdex, "--runtime", "torch"]))
        runs["import torch, open_clip"].append(timed([py, "-c", "import torch, open_clip"]))
    med = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
    rss = {k: statistics.median(r for _, r in v) for k, v in runs.items()}
    for name, value in med.items():
        print(f"cold {name:26} {value:6.2f} s, peak RSS {rss[name]:6.0f} MiB (medians of {args.repeat})")
    print(f"ratio onnx search / import torch: {med['search (onnx)'] / med['import torch, open_clip']:.2f}")
    print(f"ratio onnx search / torch search: {med['search (onnx)'] / med['search --runtime torch']:.2f}")
    print(f"peak RSS onnx search / torch search: {rss['search (onnx)'] / rss['search --runtime torch']:.2f}")

    texts = [f"a photo number {i} of something" for i in range(args.queries)]
    warm: dict[str, list[float]] = {"onnx": [], "torch": []}
    with Library.open(lib) as onnx_lib, Library.open(lib, runtime="torch") as torch_lib:
        onnx_lib.encode_texts(["warm up"]), torch_lib.encode_texts(["warm up"])
        for q in texts:  # alternate one query each
            for name, one in (("onnx", onnx_lib), ("torch", torch_lib)):
                t = time.perf_counter()
                one.encode_texts([q])
                warm[name].append(time.perf_counter() - t)
    p50 = {k: statistics.median(v) * 1000 for k, v in warm.items()}
    print(f"warm text query p50: onnx {p50['onnx']:.1f} ms, torch {p50['torch']:.1f} ms, "
          f"ratio onnx / torch {p50['onnx'] / p50['torch']:.2f} ({args.queries} queries)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
