"""open_clip's inference image transform, step for step, with PIL and numpy (no torch, no torchvision).

``describe`` reads the steps off a loaded model's torchvision ``Compose`` into plain JSON; ``Preprocess``
replays them. Each step follows torchvision's own rules (output size, rounding of the crop offset,
padding), so the pixels equal open_clip's within float32 rounding; ``export`` checks that on test
pictures before it trusts a description.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

INTERPOLATIONS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                  "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}  # fmt: skip


class UnsupportedPreprocess(Exception):
    """The model's transform has a step this module does not replay (the caller keeps torch)."""


def describe(transform: Any) -> list[dict]:
    """The steps of open_clip's inference ``Compose`` as JSON-able dicts."""
    steps = []
    for t in getattr(transform, "transforms", [transform]):
        name = type(t).__name__
        if name == "Resize":
            if getattr(t, "max_size", None) is not None:
                raise UnsupportedPreprocess("Resize with max_size")
            steps.append({"op": "resize", "size": _size(t.size), "interpolation": _interp(t.interpolation)})
        elif name == "ResizeKeepRatio":
            if t.random_scale_prob or t.random_aspect_prob:
                raise UnsupportedPreprocess("a random resize")
            steps.append({"op": "resize_keep_ratio", "size": list(t.size), "longest": float(t.longest),
                          "interpolation": _interp(t.interpolation)})  # fmt: skip
        elif name == "CenterCrop":
            steps.append({"op": "center_crop", "size": list(t.size), "fill": 0})
        elif name == "CenterCropOrPad":
            steps.append({"op": "center_crop", "size": list(t.size), "fill": t.fill})
        elif _is_rgb_conversion(t):
            steps.append({"op": "rgb"})
        elif name in ("ToTensor", "MaybeToTensor"):
            steps.append({"op": "to_array"})
        elif name == "Normalize":
            mean, std = [float(v) for v in t.mean], [float(v) for v in t.std]
            steps.append({"op": "normalize", "mean": mean, "std": std})
        else:
            raise UnsupportedPreprocess(f"transform step {name}")
    if not steps or steps[-1]["op"] not in ("normalize", "to_array"):
        raise UnsupportedPreprocess("a transform that does not end in a tensor")
    ops = [s["op"] for s in steps]
    if "rgb" not in ops or ops.index("rgb") > ops.index("to_array"):  # to_array reads 8-bit RGB only
        raise UnsupportedPreprocess("a transform that does not convert to RGB before the tensor")
    return steps


def _is_rgb_conversion(t: Any) -> bool:
    # open_clip's MaybeConvertMode("RGB") or its older plain function _convert_to_rgb; no other callable
    if type(t).__name__ == "MaybeConvertMode":
        return getattr(t, "mode", None) == "RGB"
    return callable(t) and getattr(t, "__name__", "") == "_convert_to_rgb"


def _size(size: Any) -> list[int]:
    return [int(size)] if isinstance(size, int) else [int(s) for s in size]


def _interp(mode: Any) -> str:
    value = getattr(mode, "value", mode)
    if value not in INTERPOLATIONS:
        raise UnsupportedPreprocess(f"interpolation {value}")
    return value


@dataclass
class Preprocess:
    """A PIL image -> (3, H, W) float32 array, as the described open_clip transform makes it."""

    steps: list[dict]

    def __call__(self, img: Image.Image) -> np.ndarray:
        out: Any = img
        for step in self.steps:
            out = _STEPS[step["op"]](out, step)
        return out

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self(im) for im in images]) if images else np.zeros((0, 3, 1, 1), np.float32)


def _resize_to(img: Image.Image, hw: Sequence[int], interpolation: str) -> Image.Image:
    h, w = int(hw[0]), int(hw[1])
    if (img.height, img.width) == (h, w):  # torchvision returns the image untouched
        return img
    return img.resize((w, h), INTERPOLATIONS[interpolation])


def _resize(img: Image.Image, step: dict) -> Image.Image:
    size = step["size"]
    if len(size) == 2:
        return _resize_to(img, size, step["interpolation"])
    # torchvision: the shorter side becomes size, the longer is scaled and truncated
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size[0], int(size[0] * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return _resize_to(img, (new_h, new_w), step["interpolation"])


def _resize_keep_ratio(img: Image.Image, step: dict) -> Image.Image:
    h, w = img.height, img.width
    th, tw = step["size"]
    rh, rw = h / th, w / tw
    ratio = max(rh, rw) * step["longest"] + min(rh, rw) * (1.0 - step["longest"])
    return _resize_to(img, [round(h / ratio), round(w / ratio)], step["interpolation"])


def _center_crop(img: Image.Image, step: dict) -> Image.Image:
    ch, cw = step["size"] if len(step["size"]) == 2 else step["size"] * 2
    w, h = img.size
    if cw > w or ch > h:  # pad first, split as torchvision does (the odd pixel right/bottom)
        left, top = (cw - w) // 2 if cw > w else 0, (ch - h) // 2 if ch > h else 0
        right, bottom = (cw - w + 1) // 2 if cw > w else 0, (ch - h + 1) // 2 if ch > h else 0
        padded = Image.new(img.mode, (w + left + right, h + top + bottom), _fill(img, step["fill"]))
        if img.mode == "P":  # torchvision keeps the palette (a new P image has a default one)
            padded.putpalette(img.getpalette())
        padded.paste(img, (left, top))
        img, (w, h) = padded, padded.size
        if (w, h) == (cw, ch):
            return img
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


def _fill(img: Image.Image, fill: Any) -> Any:
    if isinstance(fill, (list, tuple)):
        return tuple(int(v) for v in fill)
    return (int(fill),) * len(img.getbands()) if len(img.getbands()) > 1 else int(fill)


def _rgb(img: Image.Image, step: dict) -> Image.Image:
    return img.convert("RGB")


def _to_array(img: Image.Image, step: dict) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32) / np.float32(255)


def _normalize(arr: np.ndarray, step: dict) -> np.ndarray:
    mean = np.asarray(step["mean"], np.float32)[:, None, None]
    std = np.asarray(step["std"], np.float32)[:, None, None]
    return (arr - mean) / std


_STEPS = {"resize": _resize, "resize_keep_ratio": _resize_keep_ratio, "center_crop": _center_crop,
          "rgb": _rgb, "to_array": _to_array, "normalize": _normalize}  # fmt: skip
