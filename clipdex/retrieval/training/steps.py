"""Training pieces for fine-tuning, each the way open_clip's own training code does it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from clipdex.errors import ClipdexError

MAX_LOGIT_SCALE = math.log(100)


def make_loss(model: nn.Module) -> nn.Module:
    """SigLIP's sigmoid loss for models with a learnable logit bias, else CLIP's symmetric InfoNCE."""
    from open_clip.loss import ClipLoss, SigLipLoss

    return SigLipLoss() if getattr(model, "logit_bias", None) is not None else ClipLoss()


def _text_modules(model: nn.Module) -> tuple[Any, list[nn.Module | nn.Parameter]]:
    """(text transformer, head modules) for open_clip's CLIP and CustomTextCLIP."""
    if hasattr(model, "text"):  # CustomTextCLIP: an HF or custom text tower
        text = model.text
        return getattr(text, "transformer", None), [
            getattr(text, n)
            for n in ("ln_final", "text_projection", "proj")
            if getattr(text, n, None) is not None
        ]
    heads = [
        getattr(model, n) for n in ("ln_final", "text_projection") if getattr(model, n, None) is not None
    ]
    return getattr(model, "transformer", None), heads


def _image_modules(model: nn.Module) -> tuple[Any, list[nn.Module | nn.Parameter]]:
    visual = model.visual
    heads = [getattr(visual, n) for n in ("ln_post", "proj") if getattr(visual, n, None) is not None]
    return getattr(visual, "transformer", None), heads


def _blocks(transformer: Any) -> Any:
    """The tower's sequence of transformer blocks: open_clip's ``resblocks``, or a Hugging Face
    encoder's layers (``encoder.layer`` for BERT/XLM-R, ``encoder.layers`` for NLLB, ``block`` for
    mT5: the ``layer_attr`` open_clip's own ``HFTextEncoder.lock`` uses)."""
    blocks = getattr(transformer, "resblocks", None)
    if blocks is not None or transformer is None:
        return blocks
    encoder = getattr(transformer, "encoder", transformer)
    for attr in ("layer", "layers", "block"):
        blocks = getattr(encoder, attr, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    return None


def _params(obj: nn.Module | nn.Parameter) -> list[nn.Parameter]:
    return [obj] if isinstance(obj, nn.Parameter) else list(obj.parameters())


def freeze_towers(model: nn.Module, lock_image: bool, lock_text: bool, unlock_last: int = 0) -> None:
    """Freeze the chosen towers; ``unlock_last`` N re-enables the last N blocks plus the output head
    (ln_post/proj for the image tower, ln_final/text_projection for the text tower; for a Hugging
    Face text tower the last N transformer layers and open_clip's projection ``proj``)."""
    visual_ids = {id(p) for p in model.visual.parameters()}
    scale_ids = {
        id(getattr(model, n)) for n in ("logit_scale", "logit_bias") if getattr(model, n, None) is not None
    }
    towers = []
    if lock_image:
        towers.append(
            ("image", [p for p in model.parameters() if id(p) in visual_ids], _image_modules(model))
        )
    if lock_text:
        text = [p for p in model.parameters() if id(p) not in visual_ids and id(p) not in scale_ids]
        towers.append(("text", text, _text_modules(model)))
    for name, params, (transformer, heads) in towers:
        for p in params:
            p.requires_grad_(False)
        if unlock_last > 0:
            blocks = _blocks(transformer)
            if blocks is None:
                raise ClipdexError(f"--unlock-last is not supported for this model's {name} tower")
            if unlock_last > len(blocks):
                raise ClipdexError(
                    f"--unlock-last {unlock_last}: the {name} tower has only {len(blocks)} blocks"
                )
            for module in [*blocks[-unlock_last:], *heads]:
                for p in _params(module):
                    p.requires_grad_(True)


def set_grad_checkpointing(model: nn.Module, enable: bool) -> None:
    """open_clip's ``set_grad_checkpointing``, except for a Hugging Face text tower, whose open_clip
    wrapper turns checkpointing on whatever ``enable`` says: there the transformer is told directly."""
    text = getattr(model, "text", None)
    transformer = getattr(text, "transformer", None)
    if transformer is None or not hasattr(transformer, "gradient_checkpointing_disable"):
        model.set_grad_checkpointing(enable)
        return
    model.visual.set_grad_checkpointing(enable)
    verb = "enable" if enable else "disable"  # transformers 5 renamed it (the old name warns)
    fn = getattr(transformer, f"activation_checkpointing_{verb}", None) or getattr(
        transformer, f"gradient_checkpointing_{verb}"
    )
    fn()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as open_clip's main.py: no decay on gains, biases, norms and the logit scale."""

    def exclude(n: str, p: nn.Parameter) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ClipdexError("nothing to train: both towers are locked (use --unlock-last N)")
    return [
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay},
    ]


def cosine_lr(base_lr: float, warmup: int, total: int, step: int) -> float:
    """open_clip's cosine schedule: linear warmup over ``warmup`` steps, then cosine to zero."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr


def autocast(device: str, dtype: torch.dtype | None) -> Any:
    return (
        torch.autocast("cuda", dtype=dtype)
        if device.startswith("cuda") and dtype is not None
        else nullcontext()
    )


def _forward(model: nn.Module, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
    out = model(images, texts)
    if not isinstance(out, dict):
        keys = ("image_features", "text_features", "logit_scale", "logit_bias")
        out = dict(zip(keys, out, strict=False))
    return out


def _loss(
    loss_fn: nn.Module, img: torch.Tensor, txt: torch.Tensor, out: dict, live_scale: bool
) -> torch.Tensor:
    scale, bias = out["logit_scale"], out.get("logit_bias")
    if not live_scale:  # see accumulated_step: the temperature's gradient must be counted once
        scale = scale.detach()
        bias = bias.detach() if bias is not None else None
    return loss_fn(img, txt, scale, bias) if bias is not None else loss_fn(img, txt, scale)


def contrastive_step(
    model: nn.Module,
    loss_fn: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    amp_dtype: torch.dtype | None = None,
    scaler: Any = None,
) -> float:
    """Forward + backward for one optimizer step; gradients are left in ``.grad``. Returns the loss.

    With several micro-batches it is open_clip's ``accum_freq``: a first no-grad pass caches every
    micro-batch's features, then each micro-batch is recomputed with grad and the loss is taken
    against the whole cached set, so every accumulated sample is a negative. Each pass backpropagates
    into its own features only; the sum of the passes is the gradient of the full-batch loss. (Unlike
    open_clip, the temperature stays live in the first pass only, so its gradient is not counted
    once per micro-batch.)
    """
    device = next(model.parameters()).device

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    if len(micro_batches) == 1:
        images, texts = micro_batches[0]
        with autocast(device.type, amp_dtype):
            out = _forward(model, images, texts)
            loss = _loss(loss_fn, out["image_features"], out["text_features"], out, True)
        backward(loss)
        return float(loss.detach())
    cached_img, cached_txt = [], []
    with torch.no_grad(), autocast(device.type, amp_dtype):
        for images, texts in micro_batches:
            out = _forward(model, images, texts)
            cached_img.append(out["image_features"])
            cached_txt.append(out["text_features"])
    total = 0.0
    for j, (images, texts) in enumerate(micro_batches):
        with autocast(device.type, amp_dtype):
            out = _forward(model, images, texts)
            img = torch.cat(cached_img[:j] + [out["image_features"]] + cached_img[j + 1 :])
            txt = torch.cat(cached_txt[:j] + [out["text_features"]] + cached_txt[j + 1 :])
            loss = _loss(loss_fn, img, txt, out, live_scale=j == 0)
        backward(loss)
        total = float(loss.detach())  # every pass computes the same full-batch loss value
    return total


def clamp_logit_scale(model: nn.Module) -> None:
    """Keep the temperature in open_clip's range: logit_scale in [0, ln 100]."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def wise_blend(
    start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT weight-space ensemble: (1-alpha)*start + alpha*tuned; alpha 0 and 1 are exact copies."""
    if not 0 <= alpha <= 1:
        raise ClipdexError(f"--wise must be between 0 and 1, got {alpha}")
    if alpha == 0:
        return {k: v.clone() for k, v in start.items()}
    if alpha == 1:
        return {k: v.clone() for k, v in tuned.items()}
    out = {}
    for k, t in tuned.items():
        s = start[k]
        out[k] = torch.lerp(s.float(), t.float(), alpha).to(t.dtype) if t.is_floating_point() else t.clone()
    return out
