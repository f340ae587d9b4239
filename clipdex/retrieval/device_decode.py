"""Optional JPEG decoding on the model's device (nvJPEG on CUDA, via torchvision.io.decode_jpeg).

A GPU encodes images faster than the CPU cores can decode full-size photos; decoding JPEGs on the
GPU moves that work over. A decode thread only reads the file's bytes and header (date, size,
pixel limit); the batch is decoded, resized (shorter side, bicubic, antialiased), centre-cropped
and normalised on the device. The result is close to, not bit-identical with, the PIL path
(different resampling code), as fp16 encoding already is. Anything that is not a JPEG, a model
whose preprocessing is not resize + centre crop + normalise, and any file the device decoder
refuses go through the CPU path instead.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from clipdex.retrieval import decode, late_size
from clipdex.retrieval.decode import DecodeError, PhotoInfo, _open_regular, photo_info

JPEG_MAGIC = b"\xff\xd8\xff"
CHUNK = 32  # JPEGs decoded per device call


@dataclass
class JpegBytes:
    """A JPEG file's bytes, read by a decode thread, to be decoded on the device with its batch."""

    path: Any
    data: torch.Tensor  # uint8, 1-D


def device_transform(preprocess: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """open_clip's eval transform as tensor ops (uint8 CHW on any device -> normalised float CHW),
    or None when it is anything but Resize(shorter side) + CenterCrop + ... + Normalize."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Normalize, Resize
    from torchvision.transforms import functional as TF

    steps = list(getattr(preprocess, "transforms", []))
    resize = next((s for s in steps if isinstance(s, Resize)), None)
    crop = next((s for s in steps if isinstance(s, CenterCrop)), None)
    norm = next((s for s in steps if isinstance(s, Normalize)), None)
    known = (Resize, CenterCrop, Normalize)
    others = [s for s in steps if not isinstance(s, known) and "Convert" not in type(s).__name__
              and "ToTensor" not in type(s).__name__]  # fmt: skip
    if resize is None or crop is None or norm is None or others:
        return None
    size = resize.size if isinstance(resize.size, int) else None
    if size is None and isinstance(resize.size, (list, tuple)) and len(resize.size) == 1:
        size = resize.size[0]
    if size is None or resize.interpolation != InterpolationMode.BICUBIC:
        return None
    mean, std = torch.tensor(norm.mean).view(3, 1, 1), torch.tensor(norm.std).view(3, 1, 1)

    def transform(img: torch.Tensor) -> torch.Tensor:
        x = TF.resize(img.float(), size, InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, list(crop.size)).clamp_(0, 255).div_(255)
        return (x - mean.to(x.device)) / std.to(x.device)

    return transform


def read_jpeg(path: Any, on_info: Callable[[PhotoInfo], None] | None = None) -> JpegBytes | None:
    """The file's bytes if it is a JPEG within the pixel limit (header read only), else None."""
    with _open_regular(path) as fh:
        data = fh.read()
    if not data.startswith(JPEG_MAGIC):
        return None
    limit = decode.MAX_PIXELS  # at call time, as open_image reads it
    late_size.arm_pillow(limit)
    try:
        with Image.open(io.BytesIO(data)) as img:
            decode.check_pixels(img.width * img.height, limit)
            if img.mode not in ("RGB", "L", "YCbCr"):  # CMYK and friends: the CPU path converts them
                return None
            info = photo_info(img)
    except DecodeError:
        raise
    except Exception:  # a header Pillow cannot read: let the CPU path give the reason
        return None
    if on_info is not None:
        on_info(info)
    return JpegBytes(path, torch.frombuffer(bytearray(data), dtype=torch.uint8))


def decode_on_device(
    jpegs: Sequence[JpegBytes], device: str, transform: Callable[[torch.Tensor], torch.Tensor]
) -> list[torch.Tensor | None]:
    """Decode and preprocess on ``device``; None for each file the device decoder refused."""
    with warnings.catch_warnings():  # torchvision >= 0.29 warns that its decoders move to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_on_device(jpegs, device, transform)


def _decode_on_device(
    jpegs: Sequence[JpegBytes], device: str, transform: Callable[[torch.Tensor], torch.Tensor]
) -> list[torch.Tensor | None]:
    from torchvision.io import ImageReadMode, decode_jpeg

    def one(j: JpegBytes) -> torch.Tensor | None:
        try:
            img = decode_jpeg(j.data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
        except RuntimeError:
            return None
        return transform(img)

    out: list[torch.Tensor | None] = []
    # Chunks: full-size photos decoded at once would take GBs of device memory (12 MP = 36 MB each).
    for start in range(0, len(jpegs), CHUNK):
        chunk = jpegs[start : start + CHUNK]
        try:  # one batched nvJPEG call per chunk; one bad file fails the call, then one by one
            imgs = decode_jpeg([j.data for j in chunk], mode=ImageReadMode.RGB, device=device,
                               apply_exif_orientation=True)  # fmt: skip
        except RuntimeError:
            out += [one(j) for j in chunk]
            continue
        out += [transform(img) for img in imgs]
    return out


def enabled(device: str) -> bool:
    """``$CLIPDEX_GPU_DECODE``: 1 = decode JPEGs on the model's device, 0 = never; unset = on CUDA."""
    raw = os.environ.get("CLIPDEX_GPU_DECODE", "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    return device.startswith("cuda")
