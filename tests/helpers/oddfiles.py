"""Generated odd image files for decode tests (a helper module, not a test).

``make_odd_files(folder)`` writes small files covering the modes and formats a real photo folder
holds, plus a few broken ones (``BAD``). Pixel content is deliberately asymmetric where a test has
to prove an orientation.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, features

BAD = {"zero.jpg", "truncated.jpg", "text.jpg"}

# name -> (width, height) each good file must decode to (after EXIF orientation).
SIZES: dict[str, tuple[int, int]] = {
    "good.jpg": (32, 24),
    "cmyk.jpg": (30, 20),
    "gray16.png": (64, 32),
    "palette.png": (16, 8),
    "rgba.png": (12, 10),
    "rotated.jpg": (20, 40),
    "gray.pgm": (17, 9),
    "bitmap.bmp": (15, 11),
    "anim.gif": (20, 10),
    "photo.webp": (24, 16),
    "pic.tiff": (22, 14),
    "pic.jp2": (32, 32),
    "big.jpg": (1600, 1200),
}


def _gradient(w: int, h: int) -> Image.Image:
    """An RGB image that differs along both axes, so flips and rotations are detectable."""
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float64)[:, None].repeat(w, 1)
    arr = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    return Image.fromarray(arr)


def make_odd_files(folder: Path) -> dict[str, Path]:
    """Write the odd files into ``folder``; returns name -> path (``pic.jp2`` only if writable)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def path(name: str) -> Path:
        out[name] = folder / name
        return out[name]

    _gradient(32, 24).save(path("good.jpg"), quality=90)
    path("zero.jpg").write_bytes(b"")
    buf = io.BytesIO()
    _gradient(64, 48).save(buf, "JPEG", quality=95)
    path("truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    path("text.jpg").write_text("this is not a JPEG, just some text\n")
    _gradient(30, 20).convert("CMYK").save(path("cmyk.jpg"))

    # Full-range 16-bit horizontal ramp: a correct 8-bit mapping has mean ~127.
    ramp = np.linspace(0, 65535, 64).round().astype(np.uint16)[None, :].repeat(32, 0)
    Image.fromarray(ramp).save(path("gray16.png"))

    # Palette image: index 0 is fully transparent (and black, so compositing must make it white).
    pal = Image.new("P", (16, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    pal.paste(1, (8, 0, 16, 8))  # right half opaque red
    pal.save(path("palette.png"), transparency=0)

    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[:, :6] = (0, 0, 255, 255)  # left half opaque blue, right half transparent black
    Image.fromarray(rgba).save(path("rgba.png"))

    # Stored 40x20 with a red left half; Orientation=6 (rotate 90 CW to display) -> shown 20x40
    # with the red half on top.
    rot = Image.new("RGB", (40, 20), (0, 0, 255))
    rot.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    rot.save(path("rotated.jpg"), quality=95, exif=exif)

    _gradient(17, 9).convert("L").save(path("gray.pgm"))
    _gradient(15, 11).save(path("bitmap.bmp"))
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path("anim.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    _gradient(24, 16).save(path("photo.webp"), quality=90)
    _gradient(22, 14).save(path("pic.tiff"))
    if features.check("jpg_2000"):
        _gradient(32, 32).save(path("pic.jp2"))
    _gradient(1600, 1200).save(path("big.jpg"), quality=80)
    return out
