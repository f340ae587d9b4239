"""Bulk texts: `Library.add_texts` throughput vs the model's own `encode_text`, side by side.

    PYTHONPATH=$PWD python bench/add_texts.py --n 100000 --batch 256

The model is the tests' tiny text tower (64-d, 2 layers, context 32, random init, written by
``init_model``): the smallest real open_clip model, so any overhead clipdex adds around
``encode_text`` (tokenising, SQLite, FAISS) shows most. Both sides tokenise with the model's own
tokenizer and encode in batches of ``--batch``; the ratio is clipdex lines/s ÷ encode_text lines/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
WORDS = ("dog cat beach mountain red blue car tree river city night snow old young running "
         "sleeping small large photo of a the on in under near bright dark").split()  # fmt: skip


def lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    from clipdex.library import Library
    from clipdex.retrieval.embed import encode_texts
    from clipdex.retrieval.model_init import init_model
    from clipdex.retrieval.models import load_model, resolve_spec

    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-texts-"))
    (work / "cfg.json").write_text(json.dumps(CFG))
    model_dir = init_model(str(work / "cfg.json"), work / "tiny")
    texts = lines(args.n)

    # Alternating rounds, best of each (the machine is shared: take the least disturbed run).
    lm = load_model(resolve_spec(str(model_dir)), "cpu")
    model_s, enc_s, add_s, rerun_s = [], [], [], []
    for r in range(args.rounds):
        # 1. the model alone: tokenise + encode_text in batches (what any caller must pay)
        t = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(texts), args.batch):
                lm.model.encode_text(lm.tokenizer(texts[s : s + args.batch]))
        model_s.append(time.perf_counter() - t)
        # 1b. clipdex's encode_texts (normalised float32 out)
        t = time.perf_counter()
        encode_texts(lm, texts, batch_size=args.batch)
        enc_s.append(time.perf_counter() - t)
        # 2. the whole user path: Library.add_texts into a new library (model load excluded)
        lib = Library.open(work / f"lib{r}", create=True, model=str(model_dir), device="cpu")
        lib.models.keep(lm)  # the model's load is not what is measured
        t = time.perf_counter()
        ids = lib.add_texts(texts, batch_size=args.batch)
        add_s.append(time.perf_counter() - t)
        assert len(ids) == len(texts)
        # 3. a re-run: everything known, nothing encoded
        t = time.perf_counter()
        again = lib.add_texts(texts, batch_size=args.batch)
        rerun_s.append(time.perf_counter() - t)
        assert again == []
        lib.close()
    model_s, enc_s, add_s, rerun_s = min(model_s), min(enc_s), min(add_s), min(rerun_s)

    n = len(texts)
    load = os.getloadavg()[0]
    print(
        f"{n} lines, batch {args.batch}, tiny 64-d text tower, {os.cpu_count()} cores, load {load:.1f},"
        f" best of {args.rounds} alternating rounds",
        file=sys.stderr,
    )
    print(f"{'path':32} {'seconds':>8} {'lines/s':>9}")
    for name, s in (("model encode_text (+tokenize)", model_s), ("clipdex encode_texts", enc_s),
                    ("Library.add_texts", add_s), ("add_texts re-run (all known)", rerun_s)):  # fmt: skip
        print(f"{name:32} {s:8.2f} {n / s:9.0f}")
    print(f"add_texts / encode_text throughput: {model_s / add_s:.2f}x (goal >= 0.8)")


if __name__ == "__main__":
    main()
