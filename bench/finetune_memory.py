"""Fine-tuning memory: RSS growth per training pair, bounded view cache vs holding every view.

    PYTHONPATH=$PWD python bench/finetune_memory.py [--pairs 1000 3000] [--cache-mb 64]

What grows with the number of pairs in fine-tuning is the decoded views (224x224 RGB: 147 KiB
each), the pairs and their tokens; the model, optimizer and one batch's activations do not. For
each size this runs, in a fresh process, exactly what `finetune` holds per pair: `decode_pairs`
with ViT-B-32's eval transform (PIL part) into a `ViewCache` of ``--cache-mb`` (and, for
comparison, unbounded: the old behaviour), plus the token tensor of every caption. It reports the
peak RSS above the process's baseline and extrapolates linearly to 100k pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def make_jpegs(folder: Path, n: int) -> list[tuple[str, str]]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        if not path.exists():
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((320, 256), Image.Resampling.BILINEAR).save(path, quality=90)
        pairs.append((str(path), f"picture number {i} of coloured blocks"))
    return pairs


def child(pairs_file: str, cache_mb: int | None) -> None:
    import open_clip
    import torch  # noqa: F401 (its import is part of the baseline, not of the per-pair growth)

    from clipdex.retrieval.training.finetune import _split_transform
    from clipdex.retrieval.training.pairs import Pair, decode_pairs

    to_view = _split_transform(open_clip.image_transform(224, is_train=False))[0]
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    rows = json.loads(Path(pairs_file).read_text())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pairs = [Pair(p, c) for p, c in rows]
    decoded = decode_pairs(pairs, prepare=to_view, cache_bytes=None if cache_mb is None else cache_mb << 20)
    tokens = tokenizer([p.caption for p in decoded.pairs])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (peak - base) / 1024, "cached": decoded.images.cached,
                      "tokens_mb": tokens.nbytes / 2**20}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, nargs="+", default=[1000, 3000])
    ap.add_argument("--cache-mb", type=int, default=64, help="bound of the bounded runs (finetune: 1024)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], None if args.child[1] == "none" else int(args.child[1]))
        return
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-ftmem-"))
    all_pairs = make_jpegs(work / "imgs", max(args.pairs))
    results: dict[str, list[float]] = {}
    for label, cache in (("bounded", str(args.cache_mb)), ("unbounded", "none")):
        for n in args.pairs:
            f = work / f"pairs{n}.json"
            f.write_text(json.dumps(all_pairs[:n]))
            out = subprocess.run([sys.executable, __file__, "--child", str(f), cache],
                                 capture_output=True, text=True, check=True, env=os.environ)  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.setdefault(label, []).append(r["growth_mb"])
            print(f"{label:9} cache {cache:>5} MiB  {n:6d} pairs: RSS growth {r['growth_mb']:8.1f} MB "
                  f"({r['cached']} views cached, tokens {r['tokens_mb']:.1f} MB)", flush=True)  # fmt: skip
    lo, hi = args.pairs[0], args.pairs[-1]
    target = 100_000
    for label, (g_lo, g_hi) in ((k, (v[0], v[-1])) for k, v in results.items()):
        slope = (g_hi - g_lo) / (hi - lo)  # MB per pair once the cache (if any) is full
        if label == "bounded":
            fixed = g_lo - args.cache_mb * 1.048576 - slope * lo  # pool, interpreter growth
            est = 1024 * 1.048576 + fixed + slope * target  # finetune's default --cache-mb 1024
            how = "default 1024 MiB cache"
        else:
            est = g_hi + slope * (target - hi)
            how = "every view held"
        print(
            f"{label:9}: {slope * 1024:7.2f} KB per pair -> {target:,} pairs at 224 px: "
            f"~{est / 1024:.2f} GB RSS beyond the model ({how})"
        )


if __name__ == "__main__":
    main()
