"""Reading the text in a picture: RapidOCR (PP-OCR detection, angle classification and recognition
for Chinese and English, the ONNX models inside the ``rapidocr-onnxruntime`` wheel: offline).

`TextReader.read` takes a decoded picture and gives its lines in reading order, each with its box
as fractions of the picture's width and height (so it fits the full-size picture, a thumbnail or
the drafted decode the reader saw) and the recogniser's confidence.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.results import TextLine

if TYPE_CHECKING:
    from PIL import Image

# Pictures are read at this longest side at most, and never enlarged: RapidOCR's own default
# scales the short side up to 736 px, which made a 640x320 screenshot cost 9x more to read
# (and read no better); PaddleOCR's reference setting caps the long side at 960 instead. 1280
# keeps the text of a phone screenshot (1170x2532) about half its size, still legible to PP-OCR.
READ_SIDE = 1280
# A JPEG may decode at reduced scale down to this box when OCR needs the picture too (the CLIP
# input is made from the same decode, so no file is decoded twice).
OCR_DRAFT = (READ_SIDE // 2, READ_SIDE // 2)
MIN_CONFIDENCE = 0.65  # below it, RapidOCR reads round shapes as "O" and the like
INSTALL = "reading text in pictures needs RapidOCR: pip install rapidocr-onnxruntime"


def prepare(picture: Image.Image) -> np.ndarray:
    """A decoded picture as the reader's input: RGB uint8 (H, W, 3), at most READ_SIDE long."""
    from PIL import Image

    if max(picture.size) > READ_SIDE:
        scale = READ_SIDE / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(picture.convert("RGB"))


def _reading_order(lines: list[tuple[list, str, float]]) -> list[tuple[list, str, float]]:
    """Top to bottom, then left to right among lines whose middles share a row (half a line)."""

    def key_of(line: tuple[list, str, float]) -> tuple[float, float, float]:
        ys = [p[1] for p in line[0]]
        return (min(ys) + max(ys)) / 2, max(1.0, max(ys) - min(ys)), min(p[0] for p in line[0])

    keyed = sorted((key_of(line), line) for line in lines)
    rows: list[list[tuple[tuple[float, float, float], Any]]] = []
    for key, line in keyed:
        if rows and abs(key[0] - rows[-1][0][0][0]) <= rows[-1][0][0][1] / 2:
            rows[-1].append((key, line))
        else:
            rows.append([(key, line)])
    return [line for row in rows for _, line in sorted(row, key=lambda kl: kl[0][2])]


def _fraction(v: float, whole: int) -> float:
    return round(min(1.0, max(0.0, float(v) / whole)), 5)


class TextReader:
    """One RapidOCR engine (its ONNX Runtime sessions are safe to share between threads)."""

    def __init__(self, min_confidence: float = MIN_CONFIDENCE, threads: int | None = None):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise ClipdexError(INSTALL) from None
        kwargs = {"text_score": min_confidence, "print_verbose": False,
                  "det_limit_type": "max", "det_limit_side_len": READ_SIDE}  # fmt: skip
        if threads:
            kwargs.update(intra_op_num_threads=threads, inter_op_num_threads=1)
        self._engine = RapidOCR(**kwargs)
        self._lock = threading.Lock()  # RapidOCR keeps per-call state on the engine

    def read(self, picture: Image.Image | np.ndarray) -> list[TextLine]:
        """The text lines in ``picture`` (a PIL image or an RGB uint8 array), reading order."""
        rgb = prepare(picture) if not isinstance(picture, np.ndarray) else picture
        h, w = rgb.shape[:2]
        if h < 8 or w < 8:
            return []
        # RapidOCR's loader treats a 3-channel array as OpenCV's BGR: hand it BGR.
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        with self._lock:
            found, _ = self._engine(bgr)
        out = []
        for box, text, score in _reading_order(found or []):
            text = str(text).strip()
            if not text:
                continue
            corners = tuple((_fraction(x, w), _fraction(y, h)) for x, y in box)
            out.append(TextLine(text, corners, float(score)))
        return out
