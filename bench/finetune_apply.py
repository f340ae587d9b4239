"""The whole `clipdex finetune --apply` command vs a plain open_clip training loop, side by side.

    PYTHONPATH=$PWD python bench/finetune_apply.py [--scenes 1500] [--epochs 3] [--batch-size 64]

Both run as fresh processes over the same training pairs (the same seeded split clipdex makes) and
epochs, on the bench's small ResNet CLIP (bench/finetune.py's BENCH_CFG) from random init:

* clipdex: ``clipdex finetune SCENES --apply`` on a library holding the scenes: start-up, model
  load, decoding, evaluation before/each epoch/after, training, saving, and re-embedding the
  library with the result;
* plain: import torch + open_clip, create the model, preprocess every training image into one
  tensor, then ClipLoss + AdamW over shuffled batches (no evaluation, no saving).

The ratio printed is whole-command wall time clipdex / plain (goal <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from finetune import BENCH_CFG  # noqa: E402

PLAIN = r"""
import json, math, sys, time, torch, open_clip
from open_clip.loss import ClipLoss
from PIL import Image
model_dir, pairs_file, epochs, batch, lr, wd, seed = sys.argv[1:8]
epochs, batch, lr, wd, seed = int(epochs), int(batch), float(lr), float(wd), int(seed)
pairs = json.load(open(pairs_file))
torch.manual_seed(seed)
torch.set_flush_denormal(True)
model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
images = torch.stack([preprocess(Image.open(p).convert("RGB")) for p, _ in pairs])
texts = tokenizer([c for _, c in pairs])
loss_fn = ClipLoss()
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, betas=(0.9, 0.98), eps=1e-6)
for _ in range(epochs):
    model.train()
    order = torch.randperm(len(pairs))
    for i in range(0, len(pairs) - batch + 1, batch):
        idx = order[i : i + batch]
        img_f, txt_f, scale = model(images[idx], texts[idx])
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
"""


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=os.environ, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from clipdex.demo import make_scenes
    from clipdex.retrieval.model_init import init_model
    from clipdex.retrieval.training.pairs import read_pairs, split_pairs

    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-ftapply-"))
    make_scenes(work / "scenes", args.scenes, seed=1, size=64)
    (work / "cfg.json").write_text(json.dumps(BENCH_CFG))
    start = init_model(str(work / "cfg.json"), work / "start", seed=0)
    pairs, _ = read_pairs(work / "scenes")
    train, _, _ = split_pairs(pairs, 0.1, 0, 0.1)  # what `clipdex finetune` trains on (its defaults)
    (work / "train.json").write_text(json.dumps([(p.image, p.caption) for p in train]))
    cli = [sys.executable, "-c", "from clipdex.cli.main import cli; cli()"]
    hp = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr)]
    clip_s, plain_s = [], []
    for r in range(args.rounds):  # alternating, best of each: the machine is shared
        lib = work / f"lib{r}"
        subprocess.run([*cli, "--library", lib, "index", work / "scenes", "--model", start, "-q"], check=True)
        clip_s.append(timed([*cli, "--library", lib, "finetune", work / "scenes", *hp, "--apply",
                             "--device", "cpu", "--json", "-q"]))  # fmt: skip
        plain_s.append(timed([sys.executable, "-c", PLAIN, str(start), str(work / "train.json"),
                              str(args.epochs), str(args.batch_size), str(args.lr), "0.1", "0"]))  # fmt: skip
    load = os.getloadavg()[0]
    print(f"{len(train)} training pairs (of {args.scenes} scenes, 64 px), {args.epochs} epochs, batch "
          f"{args.batch_size}, {os.cpu_count()} cores, load {load:.1f}; best of {args.rounds}")  # fmt: skip
    print(f"clipdex finetune --apply (whole command): {min(clip_s):6.1f} s   {clip_s}")
    print(f"plain open_clip loop (whole script):      {min(plain_s):6.1f} s   {plain_s}")
    print(f"ratio clipdex / plain: {min(clip_s) / min(plain_s):.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
