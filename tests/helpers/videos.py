"""Small videos for tests, written with PyAV: scenes of known pictures at known times (a helper)."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
from PIL import Image

# (container extension, encoder): what the PyAV wheel can write; tests use those it has.
FORMATS = {".mp4": "libx264", ".mkv": "mpeg4", ".webm": "libvpx-vp9"}


def has_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def _checker(n: int, size: tuple[int, int]) -> np.ndarray:
    a = (np.indices(size[::-1]).sum(0) // n % 2 * 255).astype(np.uint8)
    return np.stack([a, a, a], -1)


def _stripes(n: int, axis: int, size: tuple[int, int]) -> np.ndarray:
    a = (np.indices(size[::-1])[axis] // n % 2 * 255).astype(np.uint8)
    return np.stack([a, 255 - a, a // 2], -1)


# Scenes the tests' random tiny model tells apart (cosine below 0.9 between any two; blocks
# patterns score 0.95-0.99 there, too alike for the 0.98 merge).
_SCENES = [
    lambda s: np.zeros((*s[::-1], 3), np.uint8),
    lambda s: np.full((*s[::-1], 3), 255, np.uint8),
    lambda s: _checker(4, s),
    lambda s: _checker(8, s),
    lambda s: _stripes(4, 0, s),
    lambda s: _stripes(4, 1, s),
]


def scene(n: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Distinct scene ``n`` (0-5: black, white, two checkerboards, two stripe patterns)."""
    return Image.fromarray(_SCENES[n](size))


def make_video(
    path: Path, scenes: list[tuple[Image.Image, float]], fps: int = 4, codec: str | None = None,
    rotate: int | None = None, creation_time: str | None = None,
) -> Path:  # fmt: skip
    """Write ``scenes`` (picture, seconds) one after another at ``fps``; codec by extension."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or FORMATS[path.suffix]
    w, h = scenes[0][0].size
    with av.open(str(path), "w") as out:
        if creation_time:
            out.metadata["creation_time"] = creation_time
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if rotate is not None:
            stream.set_display_rotation(rotate)
        n = 0
        for picture, seconds in scenes:
            pixels = np.asarray(picture.convert("RGB"))
            for _ in range(round(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = n, fractions.Fraction(1, fps)
                n += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def three_scenes(path: Path, seeds: tuple[int, int, int] = (2, 4, 5), seconds: float = 4.0) -> Path:
    """Scenes ``seeds`` at 0 s, 4 s and 8 s (12 s in all)."""
    return make_video(path, [(scene(s), seconds) for s in seeds])


def audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
