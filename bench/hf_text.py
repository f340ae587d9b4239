"""Text encoding lines/s for a Hugging Face text tower: torch vs ONNX Runtime, side by side.

    python bench/hf_text.py [--layers 12] [--width 768] [--lines 512] [--batch 64] [--rounds 3]

Builds, offline, a model with an XLM-R style text tower of the given size (`model init --text-tower
hf`; the default is xlm-roberta-base's shape with a vocabulary trained on clipdex's small built-in
corpus, so the embedding table is small: speeds are the transformer's), exports its graphs, then
encodes the same mixed Chinese/English/emoji lines alternately with torch (`encode_texts`) and the
ONNX graph (`OnnxEncoder.encode_texts`, tokenizing with `tokenizers`), tokenizing included in both.
Prints the median lines/s of each and onnx ÷ torch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def lines(n: int, seed: int = 0) -> list[str]:
    from clipdex.retrieval.hf_init import builtin_corpus

    rng = random.Random(seed)
    corpus = builtin_corpus()
    return [" ".join(rng.sample(corpus, rng.randint(1, 4))) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--lines", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import torch

    from clipdex.retrieval.embed import encode_texts
    from clipdex.retrieval.model_init import init_model
    from clipdex.retrieval.models import load_model, resolve_spec
    from clipdex.retrieval.onnx.encoder import OnnxEncoder
    from clipdex.retrieval.onnx.export import export_model

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-hf-"))
    heads = max(1, args.width // 64)
    cfg = {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77},
        "hf_text_config": {"hidden_size": args.width, "num_hidden_layers": args.layers,
                           "num_attention_heads": heads, "intermediate_size": 4 * args.width},
    }  # fmt: skip
    (work / "cfg.json").write_text(json.dumps(cfg))
    t = time.perf_counter()
    model_dir = init_model(str(work / "cfg.json"), work / "model", text_tower="hf")
    lm = load_model(resolve_spec(str(model_dir)), "cpu")
    print(f"model: XLM-R text tower {args.layers} layers x {args.width}, context 77, built in "
          f"{time.perf_counter() - t:.1f} s")  # fmt: skip
    t = time.perf_counter()
    export_model(lm, work / "onnx")
    print(f"ONNX export + checks: {time.perf_counter() - t:.1f} s")
    enc = OnnxEncoder(work / "onnx", threads=args.threads)
    texts = lines(args.lines)
    encode_texts(lm, texts[: args.batch], batch_size=args.batch)  # warm both
    enc.encode_texts(texts[: args.batch], batch_size=args.batch)
    rates: dict[str, list[float]] = {"torch": [], "onnx": []}
    for _ in range(args.rounds):
        for name, fn in (("torch", lambda: encode_texts(lm, texts, batch_size=args.batch)),
                         ("onnx", lambda: enc.encode_texts(texts, batch_size=args.batch))):  # fmt: skip
            t = time.perf_counter()
            fn()
            rates[name].append(len(texts) / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{args.lines} lines, batch {args.batch}, {args.threads} threads, {args.rounds} rounds (medians):")
    print(f"  torch        {med['torch']:8.1f} lines/s")
    print(f"  onnxruntime  {med['onnx']:8.1f} lines/s")
    print(f"  onnx / torch {med['onnx'] / med['torch']:8.2f}x")


if __name__ == "__main__":
    main()
