"""Fine-tune a library's CLIP model on image–caption pairs with its own contrastive objective.

The recipe follows open_clip's training code (ClipLoss/SigLipLoss with the learnable temperature,
AdamW without decay on gains and biases, cosine schedule with warmup, accum_freq-style gradient
accumulation) at fine-tuning defaults. The epoch is chosen on a validation split; recall before and
after is reported on a separate test split (or, when none is given, on the validation split, which
flatters "after" a little, and the result says so). Neither enters training; "after" is measured on
the saved model. The result is written in
open_clip's local-dir format, so plain ``open_clip`` loads it too.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipdex.errors import ClipdexError
from clipdex.retrieval.models import (
    CONFIG_NAME,
    LOCAL_DIR,
    LoadedModel,
    ModelSpec,
    load_model,
    read_local_config,
    save_local_dir,
)
from clipdex.retrieval.training import steps as tu
from clipdex.retrieval.training.loop import Step, recall, train_epochs
from clipdex.retrieval.training.pairs import Pair, decode_pairs

RECORD_NAME = "clipdex_finetune.json"


@dataclass
class FinetuneConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-5  # a fine-tuning rate for pretrained weights; a random-init model needs ~1e-3
    weight_decay: float = 0.1
    warmup: int | None = None  # optimizer steps; None = 5% of all steps
    accum_steps: int = 1
    lock_image: bool = False
    lock_text: bool = False
    unlock_last: int = 0
    patience: int | None = None  # epochs without improvement before stopping; None = off
    wise: float = 1.0
    seed: int = 0
    augment: bool = True
    workers: int | None = None  # DataLoader workers; None = 0 on CPU (torch uses every core), 4 on GPU
    # Decoded training views kept in memory (MiB; None = all). A 224 px view is 147 KiB, so 100k
    # pairs would need ~15 GB; past the bound, views are decoded again from their files per use.
    cache_mb: int | None = 1024
    # Gradient checkpointing: True = always; False = never; None = only after a CUDA out-of-memory.
    grad_checkpointing: bool | None = None


@dataclass
class FinetuneResult:
    model: str  # "local-dir:/abs/out"
    before: dict[str, float]
    after: dict[str, float]
    train_pairs: int
    val_pairs: int
    skipped: int  # pairs dropped for a missing or unreadable image
    best_epoch: int
    epochs_run: int
    seconds: float
    train_seconds: float  # time spent in training steps only (no decoding or evaluation)
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: loss, lr, recall, seconds
    bad_images: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of skipped images
    test_pairs: int = 0
    report_split: str = "val"  # the split `before`/`after` were measured on: "test" or "val"
    empty_captions: int = 0  # pairs dropped before training for an empty caption (set by the reader)
    reembedded: int | None = None  # items re-embedded when the result was applied to a library
    dropped: int | None = None  # images without a file dropped then (only with drop_unembeddable)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split_transform(transform: Any) -> tuple[Callable, Callable]:
    """Cut a Compose at ToTensor: (PIL part, tensor part).

    The PIL part (resize, crop) runs once per image at load time, so the cached images are small
    and the model sees exactly what the eval preprocess gives; the tensor part runs per use.
    """
    from torchvision.transforms import Compose

    steps = list(getattr(transform, "transforms", []))
    for i, step in enumerate(steps):
        if "ToTensor" in type(step).__name__:
            return Compose(steps[:i]), Compose(steps[i:])
    return Compose([]), transform


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _start_config(lm: LoadedModel) -> tuple[dict, dict]:
    """(model_cfg, ORIGINAL preprocess_cfg) of the starting model, to save the tuned one with."""
    if lm.spec.local_dir is not None:
        cfg = read_local_config(lm.spec.local_dir)
        return cfg["model_cfg"], cfg.get("preprocess_cfg") or {}
    import open_clip

    model_cfg = open_clip.get_model_config(lm.spec.name)  # also reads an hf-hub repo's config
    if model_cfg is None:
        raise ClipdexError(f"cannot find the architecture config of {lm.spec} to save a fine-tuned copy")
    return model_cfg, dict(getattr(lm.model.visual, "preprocess_cfg", {}) or {})


def _check_out_dir(out: Path, start: ModelSpec) -> None:
    if start.local_dir is not None and start.local_dir.resolve() == out:
        raise ClipdexError(f"--out {out} is the starting model's own directory; choose another")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_NAME).is_file())):
        raise ClipdexError(f"--out {out} exists and is not a model directory; refusing to replace it")


def _check_config(cfg: FinetuneConfig) -> None:
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.accum_steps < 1:
        raise ClipdexError("--epochs, --batch-size and --accum-steps must be at least 1")
    if cfg.lr <= 0 or cfg.weight_decay < 0 or (cfg.warmup is not None and cfg.warmup < 0):
        raise ClipdexError("--lr must be positive; --weight-decay and --warmup not negative")
    if cfg.unlock_last and not (cfg.lock_image or cfg.lock_text):
        raise ClipdexError("--unlock-last only applies together with --lock-image or --lock-text")
    if not 0 <= cfg.wise <= 1:
        raise ClipdexError(f"--wise must be between 0 and 1, got {cfg.wise}")


def finetune(
    lm: LoadedModel,
    train: Sequence[Pair],
    val: Sequence[Pair],
    cfg: FinetuneConfig,
    out_dir: str | Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
    test: Sequence[Pair] | None = None,
    on_step: Step | None = None,
) -> FinetuneResult:
    """Fine-tune ``lm`` on ``train``, select the best epoch on ``val``, save to ``out_dir``.

    ``before``/``after`` are measured on ``test`` when given (else on ``val``). An image in ``val``
    or ``test`` never enters training, and a ``test`` image also in ``val`` is dropped from ``test``.

    ``progress`` is called after every epoch with that epoch's history entry, ``on_step`` after
    every optimizer step with (step, total steps, {epoch, loss, lr}). ``lm.model`` is given
    back with its starting weights; the tuned model lives only in ``out_dir``.
    """
    t0 = time.perf_counter()
    _check_config(cfg)
    out = Path(out_dir).expanduser().resolve()
    _check_out_dir(out, lm.spec)
    model_cfg, preprocess_cfg = _start_config(lm)
    _seed_everything(cfg.seed)

    to_view, to_tensor = _split_transform(lm.preprocess)
    decoded, train, val, test = _decode_splits(train, val, test or [], to_view, cfg)
    views = decoded.images
    report = test or val

    model, device = lm.model, lm.device
    start = tu.cpu_state(model)
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    amp_dtype, scaler = None, None
    if device.startswith("cuda"):  # mixed precision pays off only on a GPU
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    # evaluation in the training precision: "before", per-epoch and "after" figures compare alike
    before = recall(lm, to_tensor, views, report, amp_dtype)
    try:
        history, best_state, best_epoch, train_seconds = train_epochs(
            lm, train, val, views, to_tensor, cfg, amp_dtype, scaler, progress, on_step
        )
        model.load_state_dict(tu.wise_blend(start, best_state, cfg.wise))
        save_local_dir(model, model_cfg, preprocess_cfg, out, tokenizer=lm.tokenizer)
    finally:
        model.load_state_dict(start)
        for n, p in model.named_parameters():
            p.requires_grad_(requires_grad[n])
        if hasattr(model, "set_grad_checkpointing"):
            tu.set_grad_checkpointing(model, False)
        model.eval()

    saved = load_model(ModelSpec(LOCAL_DIR + str(out)), device)
    after = recall(saved, _split_transform(saved.preprocess)[1], views, report, amp_dtype)
    result = FinetuneResult(
        model=LOCAL_DIR + str(out),
        before=before,
        after=after,
        train_pairs=len(train),
        val_pairs=len(val),
        skipped=decoded.skipped,
        best_epoch=best_epoch,
        epochs_run=len(history),
        seconds=time.perf_counter() - t0,
        train_seconds=train_seconds,
        history=history,
        bad_images=decoded.bad_images,
        test_pairs=len(test),
        report_split="test" if test else "val",
    )
    record = {"base_model": lm.spec.to_json(), "config": asdict(cfg), **result.to_dict()}
    (out / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return result


def _decode_splits(
    train: Sequence[Pair], val: Sequence[Pair], test: Sequence[Pair], to_view: Callable, cfg: FinetuneConfig
) -> tuple[Any, list[Pair], list[Pair], list[Pair]]:
    """Decode every split's images once; keep the pairs whose image decoded, held-out images apart."""
    # held-out images first: they are evaluated every epoch, so they are the ones worth caching
    cache = None if cfg.cache_mb is None else cfg.cache_mb << 20
    decoded = decode_pairs([*val, *test, *train], prepare=to_view, cache_bytes=cache)
    views = decoded.images
    val = [p for p in val if p.image in views]
    val_images = {p.image for p in val}
    test = [p for p in test if p.image in views and p.image not in val_images]
    held_out = val_images | {p.image for p in test}
    # a held-out image never enters training, even when --val repeats some of the training images
    train = [p for p in train if p.image in views and p.image not in held_out]
    if not val:
        raise ClipdexError("no usable validation pairs")
    need = cfg.batch_size * cfg.accum_steps
    if len(train) < need:
        raise ClipdexError(
            f"only {len(train)} training pairs, fewer than one batch of {need}; use a smaller --batch-size"
        )
    return decoded, train, val, test
