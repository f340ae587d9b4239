"""The training loop of `finetune`: batches of (augmented view, tokens), optimizer steps with
accumulation and the CUDA out-of-memory retry, one validation recall per epoch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clipdex.retrieval.embed import encode_image_batch, encode_texts
from clipdex.retrieval.models import LoadedModel
from clipdex.retrieval.training import steps as tu
from clipdex.retrieval.training.metrics import group_pairs, mean_recall, recall_at_k
from clipdex.retrieval.training.pairs import Pair

if TYPE_CHECKING:
    from clipdex.retrieval.training.finetune import FinetuneConfig

Step = Callable[[int, int, dict[str, Any]], None]  # (step, total steps, {"epoch", "loss", "lr"})


def _train_transform(lm: LoadedModel, to_tensor: Callable, augment: bool) -> Callable:
    if not augment:
        return to_tensor
    from open_clip import image_transform

    pp = dict(getattr(lm.model.visual, "preprocess_cfg", {}) or {})
    # open_clip's train transform with a mild crop only: no flip and no colour jitter, because
    # captions say "left"/"right" and name colours.
    return image_transform(
        lm.image_size,
        is_train=True,
        mean=pp.get("mean"),
        std=pp.get("std"),
        interpolation=pp.get("interpolation"),
        resize_mode=pp.get("resize_mode"),
        fill_color=pp.get("fill_color", 0),
        aug_cfg={"scale": (0.9, 1.0)},
    )


class _PairDataset(torch.utils.data.Dataset):
    def __init__(self, pairs: Sequence[Pair], images: Any, tokens: torch.Tensor, transform: Callable):
        self.pairs, self.images, self.tokens, self.transform = pairs, images, tokens, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[self.pairs[i].image]), self.tokens[i]


def recall(
    lm: LoadedModel, to_tensor: Callable, views: Any, pairs: Sequence[Pair], dtype: torch.dtype | None = None
) -> dict[str, float]:
    """Recall on the eval views: identical to encoding the decoded files with lm.preprocess
    (under autocast to ``dtype`` on CUDA: the precision training runs in)."""
    paths, texts, relevant = group_pairs(pairs)
    vecs = [
        encode_image_batch(lm, torch.stack([to_tensor(views[p]) for p in paths[i : i + 128]]), dtype)
        for i in range(0, len(paths), 128)
    ]
    return recall_at_k(np.concatenate(vecs), encode_texts(lm, texts, dtype=dtype), relevant)


def _loader(
    lm: LoadedModel, train: Sequence[Pair], views: Any, to_tensor: Callable, cfg: FinetuneConfig
) -> Any:
    """Shuffled (seeded) full batches of (augmented image, tokens)."""
    device = lm.device
    workers = cfg.workers if cfg.workers is not None else (4 if device.startswith("cuda") else 0)
    dataset = _PairDataset(
        train, views, lm.tokenizer([p.caption for p in train]), _train_transform(lm, to_tensor, cfg.augment)
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,  # a contrastive batch must be full: its size sets the number of negatives
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.startswith("cuda"),
        generator=torch.Generator().manual_seed(cfg.seed),
    )


@dataclass
class _Optimizing:
    """The optimizer and what changes between its steps (the step count, checkpointing)."""

    model: Any
    optimizer: Any
    loss_fn: Any
    cfg: FinetuneConfig
    amp_dtype: torch.dtype | None
    scaler: Any
    warmup: int
    total: int
    checkpointing: bool
    step: int = 0
    lr: float = 0.0

    def update(self, micro: list) -> float:
        """One optimizer step over the ``micro`` batches; returns the loss."""
        model, cfg = self.model, self.cfg
        self.lr = tu.cosine_lr(cfg.lr, self.warmup, self.total, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss = tu.contrastive_step(model, self.loss_fn, micro, self.amp_dtype, self.scaler)
        except torch.cuda.OutOfMemoryError:
            # memory requires checkpointing (unless it was refused or is already on): retry
            if (
                self.checkpointing
                or cfg.grad_checkpointing is False
                or not hasattr(model, "set_grad_checkpointing")
            ):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            tu.set_grad_checkpointing(model, True)
            self.checkpointing = True
            loss = tu.contrastive_step(model, self.loss_fn, micro, self.amp_dtype, self.scaler)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        tu.clamp_logit_scale(model)
        self.step += 1
        return loss


def _epoch(opt: _Optimizing, loader: Any, device: str, epoch: int, on_step: Step | None) -> list[float]:
    """One pass over ``loader`` (``accum_steps`` batches per optimizer step); the step losses."""
    losses, micro = [], []
    for images, texts in loader:
        micro.append((images.to(device, non_blocking=True), texts.to(device, non_blocking=True)))
        if len(micro) < opt.cfg.accum_steps:
            continue
        losses.append(opt.update(micro))
        micro = []
        if on_step is not None:
            on_step(opt.step, opt.total, {"epoch": epoch, "loss": losses[-1], "lr": opt.lr})
    return losses


def train_epochs(
    lm: LoadedModel,
    train: Sequence[Pair],
    val: Sequence[Pair],
    views: Any,
    to_tensor: Callable,
    cfg: FinetuneConfig,
    amp_dtype: torch.dtype | None,
    scaler: Any,
    progress: Callable[[dict[str, Any]], None] | None,
    on_step: Step | None = None,
) -> tuple[list[dict], dict, int, float]:
    """The epoch loop: (history, best state on CPU, best epoch, seconds spent training)."""
    model, device = lm.model, lm.device
    tu.freeze_towers(model, cfg.lock_image, cfg.lock_text, cfg.unlock_last)
    optimizer = torch.optim.AdamW(
        tu.param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6
    )
    checkpointing = bool(cfg.grad_checkpointing) and hasattr(model, "set_grad_checkpointing")
    if checkpointing:
        tu.set_grad_checkpointing(model, True)
    loader = _loader(lm, train, views, to_tensor, cfg)
    total = len(loader) // cfg.accum_steps * cfg.epochs
    warmup = cfg.warmup if cfg.warmup is not None else round(0.05 * total)
    opt = _Optimizing(
        model, optimizer, tu.make_loss(model), cfg, amp_dtype, scaler, warmup, total, checkpointing
    )
    history: list[dict] = []
    best_state, best_score, best_epoch, train_seconds = None, -1.0, 0, 0.0
    # Denormal floats appear within a few steps and make CPU math several times slower (measured
    # 4x on the bench model); flushing them to zero does not change what the model learns.
    flush = device == "cpu" and torch.set_flush_denormal(True)
    try:
        for epoch in range(1, cfg.epochs + 1):
            t_epoch, cpu_epoch = time.perf_counter(), time.process_time()
            model.train()
            losses = _epoch(opt, loader, device, epoch, on_step)
            seconds, cpu_seconds = time.perf_counter() - t_epoch, time.process_time() - cpu_epoch
            train_seconds += seconds
            model.eval()
            metrics = recall(lm, to_tensor, views, val, amp_dtype)
            score = mean_recall(metrics)
            entry = dict(
                epoch=epoch,
                loss=float(np.mean(losses)),
                lr=opt.lr,
                seconds=seconds,
                cpu_seconds=cpu_seconds,
                val=metrics,
                score=score,
            )
            history.append(entry)
            if progress is not None:
                progress(entry)
            if score > best_score:
                best_state, best_score, best_epoch = tu.cpu_state(model), score, epoch
            elif cfg.patience is not None and epoch - best_epoch >= cfg.patience:
                break
    finally:
        if flush:
            torch.set_flush_denormal(False)  # torch's default; it has no getter to restore from
    return history, best_state, best_epoch, train_seconds
