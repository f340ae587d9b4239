"""Every GPU path in one run, one table: ready for the day a GPU machine is available.

    PYTHONPATH=$PWD python bench/gpu.py                 # on a CUDA machine (H100-class target)
    PYTHONPATH=$PWD python bench/gpu.py --cpu-smoke     # tiny sizes on the CPU: checks the script runs

Rows (random-init weights: speed does not depend on them):
  1. end-to-end `clipdex index` img/s from JPEG files (ViT-B-32; target >= 2,500 img/s on one
     H100-class GPU, clip-retrieval's per-A100 figure), with the decode-only rate beside it;
  2. encode-only img/s (fp16 autocast, batch on the device: the encoder's ceiling);
  3. FAISS search at 1M x 512 (IVF-Flat): GPU copy vs CPU index, batched queries/s and one-query
     latency, with the one-off cost of cloning the index to the GPU (why one-shot CLI searches
     stay on the CPU);
  4. one fine-tuning step with AMP (bf16 where supported) at batch 256, with and without gradient
     checkpointing.
Without a GPU (and without --cpu-smoke) every row says "no GPU".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
Row = tuple[str, str, str]  # (path, figure, note)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_index(model_dir: Path, device: str, n: int, size: tuple[int, int], work: Path) -> list[Row]:
    from index import make_photos

    from clipdex.cli.main import cli
    from clipdex.retrieval.decode import default_workers, load_and_preprocess, ordered_prefetch
    from clipdex.retrieval.models import load_model, resolve_spec

    photos = make_photos(
        Path(tempfile.gettempdir()) / "clipdex-bench-photos" / f"{size[0]}x{size[1]}", n, size
    )
    folder = work / "photos"
    folder.mkdir()
    for p in photos:
        (folder / p.name).symlink_to(p)
    lm = load_model(resolve_spec(str(model_dir)), device)
    t = time.perf_counter()
    for _, r in ordered_prefetch(lambda p: load_and_preprocess(p, lm.preprocess, lm.image_size), photos,
                                 default_workers()):  # fmt: skip
        assert not isinstance(r, BaseException), r
    decode = len(photos) / (time.perf_counter() - t)
    args = [
        "--library",
        str(work / "lib"),
        "index",
        str(folder),
        "--model",
        str(model_dir),
        "-q",
        "--device",
        device,
    ]
    t = time.perf_counter()
    cli.main(args, standalone_mode=False)
    ips = len(photos) / (time.perf_counter() - t)
    note = f"{len(photos)} JPEGs {size[0]}x{size[1]}, {default_workers()} decode threads"
    return [("index end to end (img/s)", f"{ips:,.0f}", note + " (target >= 2,500 on H100)"),
            ("decode + preprocess only (img/s)", f"{decode:,.0f}", "CPU threads, no model")]  # fmt: skip


def bench_encode(model_dir: Path, device: str, batch: int, reps: int) -> list[Row]:
    import torch

    from clipdex.retrieval.embed import encode_image_async, stack_pixels
    from clipdex.retrieval.models import load_model, resolve_spec

    lm = load_model(resolve_spec(str(model_dir)), device)
    pixels = stack_pixels([torch.randn(3, *lm.image_size) for _ in range(batch)], device)
    encode_image_async(lm, pixels)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        encode_image_async(lm, pixels)
    sync(device)
    ips = reps * batch / (time.perf_counter() - t)
    return [("encode only (img/s)", f"{ips:,.0f}", f"batch {batch}, pinned host tensor, fp16 on CUDA")]


def bench_faiss(n: int, dim: int, queries: int) -> list[Row]:
    import faiss

    from clipdex.index.faiss import ann
    from clipdex.index.faiss.build import build
    from clipdex.index.faiss.gpu import to_gpu

    rng = np.random.default_rng(0)
    latent = rng.standard_normal((n, 16)).astype(np.float32) @ rng.standard_normal((16, dim)).astype(
        np.float32
    )
    x = latent + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(1, n + 1, dtype=np.int64)
    q = x[rng.integers(0, n, queries)] + 0.1 * rng.standard_normal((queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    def get_vectors(want: np.ndarray) -> np.ndarray:
        return x[want - 1]

    t = time.perf_counter()
    cpu = build(x, ids, "ivf-fp16", seed=0)  # what auto builds at this size
    build_s = time.perf_counter() - t
    rows: list[Row] = [
        ("FAISS build + tune (s)", f"{build_s:.1f}", f"{n:,} x {dim} IVF (fp16 lists) {cpu.info['params']}")
    ]

    def rate(index: ann.AnnIndex) -> tuple[float, float]:
        index.search(q[:8], 10, get_vectors)
        t = time.perf_counter()
        index.search(q, 10, get_vectors)
        qps = len(q) / (time.perf_counter() - t)
        t = time.perf_counter()
        for one in q[:50]:
            index.search(one[None], 10, get_vectors)
        return qps, (time.perf_counter() - t) / 50 * 1e3

    qps, ms = rate(cpu)
    rows.append(
        ("FAISS CPU search", f"{qps:,.0f} q/s", f"batched; one query {ms:.2f} ms (k=10, exact re-rank)")
    )
    if faiss.get_num_gpus() == 0:
        rows.append(("FAISS GPU search", "no GPU", "faiss sees no GPU (faiss-cpu, or no CUDA device)"))
        return rows
    t = time.perf_counter()
    gpu = to_gpu(cpu)
    clone_s = time.perf_counter() - t
    if gpu is cpu:
        rows.append(("FAISS GPU search", "not cloned", cpu.info.get("gpu_error", "")))
        return rows
    qps, ms = rate(gpu)
    rows.append(
        ("FAISS GPU search", f"{qps:,.0f} q/s", f"batched; one query {ms:.2f} ms; clone {clone_s:.1f} s")
    )
    big = gpu.search(q[:4], 300, get_vectors)[1]  # k*rerank > 2048: must run on the CPU copy
    assert np.array_equal(big, cpu.search(q[:4], 300, get_vectors)[1])
    return rows


def bench_finetune(model_dir: Path, device: str, batch: int, steps: int) -> list[Row]:
    import torch

    from clipdex.retrieval.models import load_model, resolve_spec
    from clipdex.retrieval.training import steps as tu

    lm = load_model(resolve_spec(str(model_dir)), device)
    model = lm.model
    model.train()
    amp = None
    if device.startswith("cuda"):
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    opt = torch.optim.AdamW(tu.param_groups(model, 0.1), lr=1e-5)
    loss_fn = tu.make_loss(model)
    images = torch.randn(batch, 3, *lm.image_size, device=device)
    texts = lm.tokenizer([f"a photo number {i}" for i in range(batch)]).to(device)
    rows = []
    for ckpt in (False, True):
        model.set_grad_checkpointing(ckpt)
        times = []
        for _ in range(steps + 1):
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            tu.contrastive_step(model, loss_fn, [(images, texts)], amp, scaler)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sync(device)
            times.append(time.perf_counter() - t)
        peak = (
            f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.startswith("cuda") else ""
        )
        label = "fine-tune step" + (" (grad checkpointing)" if ckpt else "")
        rows.append(
            (label + " (ms)", f"{np.median(times[1:]) * 1e3:,.0f}", f"batch {batch}, AMP {amp}{peak}")
        )
    model.set_grad_checkpointing(False)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (checks the script)")
    ap.add_argument("--n", type=int, default=5000, help="JPEGs to index")
    ap.add_argument("--size", default="1600x1200")
    ap.add_argument("--vectors", type=int, default=1_000_000)
    args = ap.parse_args()

    import torch

    from clipdex.retrieval.model_init import init_model

    cuda = torch.cuda.is_available()
    rows: list[Row]
    if not cuda and not args.cpu_smoke:
        names = ("index end to end (img/s)", "encode only (img/s)", "FAISS GPU search", "fine-tune step (ms)")
        rows = [(name, "no GPU", "torch sees no CUDA device") for name in names]
    else:
        smoke = args.cpu_smoke
        device = "cpu" if smoke else "cuda"
        work = Path(tempfile.mkdtemp(prefix="clipdex-bench-gpu-"))
        if smoke:
            (work / "tiny.json").write_text(json.dumps(TINY))
            model_dir = init_model(str(work / "tiny.json"), work / "model")
        else:
            model_dir = init_model("ViT-B-32", work / "model")
        w, h = (320, 240) if smoke else (int(v) for v in args.size.split("x"))
        rows = bench_index(model_dir, device, 24 if smoke else args.n, (w, h), work)
        rows += bench_encode(model_dir, device, 16 if smoke else 1024, 2 if smoke else 20)
        rows += bench_faiss(20_000 if smoke else args.vectors, 64 if smoke else 512, 64 if smoke else 10_000)
        rows += bench_finetune(model_dir, device, 8 if smoke else 256, 2 if smoke else 10)
    name = torch.cuda.get_device_name(0) if cuda else f"no GPU ({os.cpu_count()} CPU cores)"
    print(f"device: {name}{'  [--cpu-smoke: tiny sizes, figures mean nothing]' if args.cpu_smoke else ''}")
    width = max(len(r[0]) for r in rows)
    for path, figure, note in rows:
        print(f"{path:<{width}}  {figure:>14}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
