"""Why does an image match a query? Occlusion sensitivity, batched through the model.

Square windows of the picture are covered one at a time (filled with the picture's median colour,
so a cover adds no colour of its own) and every covered copy is encoded in batches. A window whose
cover lowers the image–query cosine held something that raised it; each pixel's heat is the mean
drop over the windows covering it. It needs nothing but ``encode_image``, so it works the same for
every open_clip architecture (ViT, ResNet and ConvNeXt towers alike), at the cost of one forward
pass per window (about 100 for the default sizes).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from clipdex.retrieval.embed import encode_image_batch
from clipdex.retrieval.models import LoadedModel


@dataclass
class Explanation:
    """``score``: the image–query cosine (as search computes it). ``heat``: per pixel of ``image``,
    the similarity lost when that area is covered (> 0 where the area raises the similarity)."""

    score: float
    heat: np.ndarray  # (H, W) float32, over `image`
    image: Image.Image  # the picture at the working size the windows were placed on

    def png(self, original: Image.Image | None = None) -> bytes:
        """`render` as PNG bytes (what an HTTP handler sends)."""
        buf = io.BytesIO()
        render(self, original).save(buf, format="PNG")
        return buf.getvalue()


def _windows(width: int, height: int, size: int, stride: int) -> list[tuple[int, int]]:
    def starts(extent: int) -> list[int]:
        last = max(0, extent - size)
        return sorted({*range(0, last + 1, stride), last})

    return [(x, y) for y in starts(height) for x in starts(width)]


def explain(
    lm: LoadedModel,
    image: Image.Image,
    target: np.ndarray,
    *,
    window: float = 0.25,
    stride: float = 1 / 3,
    batch_size: int = 32,
) -> Explanation:
    """Occlusion heat map of ``image`` (RGB) for the unit query vector ``target`` (text or image).

    ``window``: the cover's side as a share of the picture's shorter side; ``stride``: the step as a
    share of the window. The picture is first scaled so its shorter side is the model's input size
    (what the model sees anyway), so the windows are in the model's own resolution.
    """
    target = np.asarray(target, np.float32).reshape(-1)
    score = float(encode_image_batch(lm, lm.preprocess(image)[None])[0] @ target)
    side = min(lm.image_size)
    scale = side / min(image.size)
    work = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.BICUBIC)  # fmt: skip
    pixels = np.asarray(work)
    fill = np.median(pixels.reshape(-1, 3), axis=0).astype(np.uint8)
    size = max(1, round(min(work.size) * window))
    spots = _windows(work.width, work.height, size, max(1, round(size * stride)))

    def covered(x: int, y: int) -> torch.Tensor:
        copy = pixels.copy()
        copy[y : y + size, x : x + size] = fill
        return lm.preprocess(Image.fromarray(copy))

    base = float(encode_image_batch(lm, lm.preprocess(work)[None])[0] @ target)
    drops: list[float] = []
    for start in range(0, len(spots), batch_size):
        chunk = spots[start : start + batch_size]
        vecs = encode_image_batch(lm, torch.stack([covered(x, y) for x, y in chunk]))
        drops += list(base - vecs @ target)
    heat = np.zeros(pixels.shape[:2], np.float64)
    count = np.zeros(pixels.shape[:2], np.float64)
    for (x, y), drop in zip(spots, drops, strict=True):
        heat[y : y + size, x : x + size] += drop
        count[y : y + size, x : x + size] += 1
    return Explanation(score, (heat / np.maximum(count, 1)).astype(np.float32), work)


def render(
    explanation: Explanation, original: Image.Image | None = None, max_side: int = 1024
) -> Image.Image:
    """The picture (``original``, else the working copy; at most ``max_side``) with the positive heat
    blended in: untouched where covering changes nothing, hotter colours where it costs more."""
    out = (original if original is not None else explanation.image).convert("RGB")
    if max(out.size) > max_side:
        out.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    positive = np.clip(explanation.heat, 0, None)
    peak = float(positive.max())
    level = positive / peak if peak > 0 else positive
    level = Image.fromarray(level.astype(np.float32), "F").resize(out.size, Image.Resampling.BILINEAR)
    level = np.asarray(level)
    level = np.clip(level, 0, 1)[..., None]
    hot = np.clip(np.concatenate([3 * level, 3 * level - 1, 3 * level - 2], axis=-1), 0, 1) * 255
    alpha = 0.65 * level
    blended = np.asarray(out, np.float32) * (1 - alpha) + hot * alpha
    return Image.fromarray(blended.round().astype(np.uint8))


def open_for_explain(path: str | os.PathLike | bytes) -> Image.Image:
    """The picture to explain, decoded exactly as indexing does; a clear error when unreadable."""
    from clipdex.errors import ClipdexError
    from clipdex.retrieval.decode import DecodeError, open_image

    try:
        return open_image(path)
    except DecodeError as e:
        raise ClipdexError(f"cannot read image {os.fsdecode(path)}: {e}") from e
