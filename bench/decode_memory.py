"""Peak memory of `clipdex index` on a folder of 50-megapixel PNGs, default workers.

    python bench/decode_memory.py [--images 8] [--megapixels 50]

Writes RGB, RGBA and 16-bit grey PNGs of that size (smooth content, so they are quick to write),
indexes the folder with a tiny random-init model in a child process (default --workers: the CPUs,
at most 8) and prints the child's peak RSS next to the size of one decoded image. Decoding
reserves pixels from a budget shared by the workers (half the available memory at ~16 bytes a
pixel), so the peak stays bounded however many workers run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--megapixels", type=float, default=50)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from clipdex.retrieval.model_init import init_model
    from clipdex.retrieval.prefetch import default_workers

    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-mem-"))
    try:
        w = int((args.megapixels * 1e6 * 3 / 2) ** 0.5)
        h = int(args.megapixels * 1e6 / w)
        folder = work / "imgs"
        folder.mkdir()
        t = time.perf_counter()
        across = np.linspace(0, 1, w, dtype=np.float32)[None, :]
        ramp = across * np.linspace(0.2, 1, h, dtype=np.float32)[:, None]
        for i in range(args.images):
            kind = ("RGB", "RGBA", "I;16")[i % 3]
            if kind == "I;16":
                img = Image.fromarray((ramp * 65535).astype(np.uint16))
            else:
                base = (ramp * 255).astype(np.uint8)
                chans = [base, np.roll(base, i * 100, axis=1), base[::-1]]
                if kind == "RGBA":
                    chans.append(np.full_like(base, 200))
                img = Image.fromarray(np.dstack(chans), kind)
            img.save(folder / f"{i:02d}-{kind.replace(';', '')}.png", compress_level=1)
            del img
        took = time.perf_counter() - t
        print(f"wrote {args.images} PNGs of {w}x{h} ({w * h / 1e6:.0f} MP) in {took:.0f} s")
        cfg = work / "tiny.json"
        cfg.write_text(json.dumps({
            "embed_dim": 64,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        }))  # fmt: skip
        model = init_model(str(cfg), work / "model", seed=0)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "clipdex.cli.main", "--library", str(work / "lib"), "index", str(folder),
             "--model", str(model), "--json"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB
        print(out.stdout.strip() or out.stderr.strip()[-500:])
        print(f"workers {default_workers()}  one decoded RGB image {w * h * 3 / 2**20:.0f} MiB")
        print(f"peak RSS of `clipdex index`: {peak:.0f} MiB  ({elapsed:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
