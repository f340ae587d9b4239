"""Cold start: `clipdex search` wall time ÷ bare `python -c "import torch, open_clip"`, side by side.

    python bench/startup.py [--arch ViT-B-32] [--repeat 5]

Builds a small library (a few generated images, random-init model of ARCH) once, then times fresh
processes alternately, and prints medians and the ratio (goal <= 1.5). Also times `clipdex --help`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from PIL import Image

    from clipdex.cli.main import cli
    from clipdex.retrieval.model_init import init_model

    work = Path(tempfile.mkdtemp(prefix="clipdex-startup-"))
    imgs = work / "imgs"
    imgs.mkdir()
    for i in range(8):
        Image.new("RGB", (256, 256), (30 * i, 90, 200 - 20 * i)).save(imgs / f"{i}.png")
    model = init_model(args.arch, work / "model", seed=0)
    lib = str(work / "lib")
    cli.main(["--library", lib, "index", str(imgs), "--model", str(model), "--quiet"], standalone_mode=False)

    py = sys.executable
    clipdex = [py, "-m", "clipdex.cli.main"]
    runs: dict[str, list[float]] = {"import torch, open_clip": [], "clipdex search": [], "clipdex --help": []}
    for _ in range(args.repeat):  # alternate, so background load affects both alike
        runs["import torch, open_clip"].append(timed([py, "-c", "import torch, open_clip"]))
        runs["clipdex search"].append(timed(clipdex + ["--library", lib, "search", "a photo", "-k", "3"]))
        runs["clipdex --help"].append(timed(clipdex + ["--help"]))
    med = {k: statistics.median(v) for k, v in runs.items()}
    for name, value in med.items():
        print(f"{name:26} {value:6.2f} s (median of {args.repeat})")
    print(
        f"ratio search / import: {med['clipdex search'] / med['import torch, open_clip']:.2f}  (goal <= 1.5)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
