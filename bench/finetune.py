"""Fine-tuning benchmark on synthetic captioned scenes (run by hand; CPU is fine).

    .venv/bin/python bench/finetune.py [--epochs 15] [--train 1500] [--test 200] [--skip-plain]

The demo's small CLIP (ResNet image tower) from random init is fine-tuned with clipdex on generated
scenes ("a red circle on the left on a white background"). A fifth of the 360 descriptions are held
out of training altogether: training and validation pictures show only the other ("seen") ones.
Before/after figures come from `clipdex.evaluate` on two sets of new pictures, one of seen and one of
unseen descriptions (72 descriptions each, so equally hard); a caption shared by several pictures
counts them all as right answers, so the figures are semantic (the same description, not only the
same file). For speed it then runs a plain open_clip loop (ClipLoss + AdamW, same data, batch,
epochs and lr, tensors preloaded, no augmentation, no evaluation) in the same process and prints the
time-per-epoch ratio clipdex / plain (training time only). Both flush denormals to zero, as clipdex
does on CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipdex import evaluate
from clipdex.demo import make_scenes, split_descriptions
from clipdex.retrieval.model_init import init_model
from clipdex.retrieval.models import load_model, resolve_spec
from clipdex.retrieval.training.finetune import FinetuneConfig, finetune
from clipdex.retrieval.training.pairs import read_pairs, split_pairs

# The demo's model: a small ResNet image tower (it learns positions; a ViT of this budget did not).
BENCH_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3},
}


def plain_loop(
    model_dir: Path, train, epochs: int, batch: int, lr: float, wd: float, seed: int
) -> list[tuple[float, float]]:
    """The reference: open_clip's own objects, everything preloaded, nothing else going on."""
    import open_clip
    from open_clip.loss import ClipLoss
    from PIL import Image

    torch.manual_seed(seed)
    torch.set_flush_denormal(True)  # as clipdex does on CPU, so the ratio measures loop overhead only
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    images = torch.stack([preprocess(Image.open(p.image).convert("RGB")) for p in train])
    texts = tokenizer([p.caption for p in train])
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, betas=(0.9, 0.98), eps=1e-6)
    times = []
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(len(train))
        for i in range(0, len(train) - batch + 1, batch):
            idx = order[i : i + batch]
            img_f, txt_f, scale = model(images[idx], texts[idx])
            loss = loss_fn(img_f, txt_f, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    torch.set_flush_denormal(False)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=1500, help="pictures of seen descriptions to train on")
    ap.add_argument("--test", type=int, default=200, help="new pictures per test set (seen, unseen)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)  # random init: far above a fine-tuning rate
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-plain", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-"))
    seen, unseen = split_descriptions(0.2, seed=0)
    make_scenes(work / "train", args.train, seed=1, size=64, keys=seen)
    # both test sets draw from the same number of descriptions, so they are equally hard
    seen_pool = random.Random(1).sample(seen, len(unseen))
    tests = {
        "seen": make_scenes(work / "test-seen", args.test, seed=2, size=64, keys=seen_pool),
        "unseen": make_scenes(work / "test-unseen", args.test, seed=3, size=64, keys=unseen),
    }
    pairs, _ = read_pairs(work / "train")
    train, val, _ = split_pairs(pairs, 0.1, seed=args.seed)  # validation: seen descriptions only
    (work / "cfg.json").write_text(json.dumps(BENCH_CFG))
    start_dir = init_model(str(work / "cfg.json"), work / "start", seed=args.seed)

    lm = load_model(resolve_spec(str(start_dir)), "cpu")
    cfg = FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )

    def show(e: dict) -> None:
        v = e["val"]
        print(f"  epoch {e['epoch']:2d}  loss {e['loss']:.3f}  {e['seconds']:.1f}s  "
              f"val t2i R@5 {v['t2i_r5']:.3f}  i2t R@5 {v['i2t_r5']:.3f}", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    result = finetune(lm, train, val, cfg, work / "tuned", progress=show)
    wall = time.perf_counter() - t0

    print(f"\n{result.train_pairs} training / {result.val_pairs} validation pictures of {len(seen)} seen "
          f"descriptions; {len(unseen)} descriptions never trained on; model {BENCH_CFG}")  # fmt: skip
    keys = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "t2i_map")
    print(f"{'test set':<34}" + "".join(f"{k:>16}" for k in keys))
    for name, scenes in tests.items():
        before, after = evaluate(scenes, [str(start_dir), str(work / "tuned")], device="cpu")
        label = f"{len(scenes)} new pictures, {name} descr."
        print(f"{label:<34}" + "".join(f"{before[k]:>7.3f} -> {after[k]:.3f}" for k in keys))
    wall_s = [h["seconds"] for h in result.history]
    cpu_s = [h["cpu_seconds"] for h in result.history]
    print(f"clipdex: wall {wall:.1f}s for {result.epochs_run} epochs (best on val: {result.best_epoch}), "
          f"of which training {result.train_seconds:.1f}s; per epoch {_stats(wall_s, cpu_s)}")  # fmt: skip
    if args.skip_plain:
        return
    plain = plain_loop(start_dir, train, args.epochs, args.batch_size, args.lr, args.weight_decay, args.seed)
    p_wall, p_cpu = [t for t, _ in plain], [c for _, c in plain]
    print(f"plain open_clip loop: {sum(p_wall):.1f}s; per epoch {_stats(p_wall, p_cpu)}")
    # a shared machine makes single epochs noisy: the minimum is the least disturbed measurement
    print(f"time ratio clipdex/plain per epoch: min wall {min(wall_s) / min(p_wall):.2f}, "
          f"median wall {np.median(wall_s) / np.median(p_wall):.2f}, "
          f"median cpu {np.median(cpu_s) / np.median(p_cpu):.2f}")  # fmt: skip


def _stats(wall: list[float], cpu: list[float]) -> str:
    return f"wall min {min(wall):.2f}s / median {np.median(wall):.2f}s, cpu median {np.median(cpu):.2f}s"


if __name__ == "__main__":
    main()
