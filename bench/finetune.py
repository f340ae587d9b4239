"""Fine-tuning benchmark on synthetic captioned scenes (run by hand; CPU is fine).

    .venv/bin/python bench/finetune.py [--epochs 15] [--train 1500] [--val 200]

A small ViT CLIP from random init is fine-tuned with clipdex on generated scenes ("a red circle on
the left on a white background"), and evaluated on 200 held-out scenes: Recall@1/5/10 before and
after, and SEMANTIC Recall@5 (a hit when a returned image shows the same scene description, even if
it is another file). For speed it then runs a plain open_clip loop (ClipLoss + AdamW, same data,
batch, epochs and lr, tensors preloaded, no augmentation, no evaluation) in the same process and
prints the time-per-epoch ratio clipdex / plain (training time only; clipdex's evaluation each
epoch is reported separately). Both flush denormals to zero, as clipdex does on CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipdex.demo import make_scenes, scene_key
from clipdex.retrieval.embed import encode_images, encode_texts
from clipdex.retrieval.finetune import FinetuneConfig, finetune
from clipdex.retrieval.models import init_model, load_model, resolve_spec
from clipdex.retrieval.pairs import read_pairs

# The demo's model: a small ResNet image tower (it learns positions; a ViT of this budget did not).
BENCH_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3},
}


def semantic_recall_at_5(lm, val) -> float:
    from clipdex.retrieval.decode import open_image

    paths = sorted({p.image for p in val})
    keys = np.array([scene_key(Path(p).with_suffix(".txt").read_text()) for p in paths])
    img = encode_images(lm, [open_image(p) for p in paths])
    txt = encode_texts(lm, [p.caption for p in val])
    top5 = np.argsort(-(txt @ img.T), axis=1, kind="stable")[:, :5]
    want = np.array([scene_key(p.caption) for p in val])
    return float(np.mean([(keys[row] == k).any() for row, k in zip(top5, want, strict=True)]))


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
    ap.add_argument("--train", type=int, default=1500)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)  # random init: far above a fine-tuning rate
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-plain", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-"))
    make_scenes(work / "train", args.train, seed=1, size=64)
    make_scenes(work / "val", args.val, seed=2, size=64)
    train, _ = read_pairs(work / "train")
    val, _ = read_pairs(work / "val")
    (work / "cfg.json").write_text(json.dumps(BENCH_CFG))
    start_dir = init_model(str(work / "cfg.json"), work / "start", seed=args.seed)

    lm = load_model(resolve_spec(str(start_dir)), "cpu")
    sem_before = semantic_recall_at_5(lm, val)
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
              f"t2i R@5 {v['t2i_r5']:.3f}  i2t R@5 {v['i2t_r5']:.3f}", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    result = finetune(lm, train, val, cfg, work / "tuned", progress=show)
    wall = time.perf_counter() - t0
    tuned = load_model(resolve_spec(str(work / "tuned")), "cpu")
    sem_after = semantic_recall_at_5(tuned, val)

    def row(name: str, m: dict) -> str:
        return name + "  ".join(f"{k} {m[k]:.3f}" for k in m)

    print(f"\nscenes: {result.train_pairs} train, {result.val_pairs} held out; model {BENCH_CFG}")
    print(row("before: ", result.before))
    print(row("after:  ", result.after))
    print(f"semantic R@5 (same scene description in top 5): before {sem_before:.3f}  after {sem_after:.3f}")
    wall_s = [h["seconds"] for h in result.history]
    cpu_s = [h["cpu_seconds"] for h in result.history]
    print(f"clipdex: wall {wall:.1f}s for {result.epochs_run} epochs (best {result.best_epoch}), of which "
          f"training {result.train_seconds:.1f}s; per epoch {_stats(wall_s, cpu_s)}")  # fmt: skip
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
