"""One input file of `clipdex embed` → model input plus its metadata row.

The decoding is `index`'s own (``open_image`` + the model's preprocess); only the bytes may come
from an fsspec URL. A failure raises ``LoadError`` with a one-line reason.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clipdex.errors import ClipdexError
from clipdex.inputs.sidecars import SIDECAR_MAX, SidecarError, read_sidecar, sidecar_text
from clipdex.retrieval.decode import DecodeError, image_size, open_image
from clipdex.scale.sources import Entry, filesystem, is_url


class LoadError(ClipdexError):
    """A file could not be read or decoded; ``str(e)`` is the reason."""


@dataclass(slots=True)
class Loaded:
    pixels: Any  # the preprocessed (3, H, W) tensor
    size: int  # bytes
    mtime: float  # seconds since the epoch (NaN when the store does not say)
    width: int  # as stored in the file (before EXIF rotation)
    height: int
    caption: str | None


def load_entry(entry: Entry, preprocess: Callable[[Any], Any], draft_to: tuple[int, int] | None) -> Loaded:
    """Read, decode and preprocess one file exactly as `index` does (raises LoadError)."""
    check_name(entry)
    data, size, mtime = _read(entry.key)
    # Header only, within the pixel limit: the size as stored (0 x 0: open_image gives the reason).
    width, height = image_size(io.BytesIO(data), rotated=False) or (0, 0)
    try:
        pixels = preprocess(open_image(io.BytesIO(data), draft_to))
    except DecodeError as e:
        raise LoadError(str(e)) from e
    return Loaded(pixels, size, mtime, width, height, _caption(entry))


def check_name(entry: Entry) -> None:
    """Parquet strings are UTF-8: a file whose name is not cannot be a row (raises LoadError)."""
    try:
        entry.key.encode("utf-8")
    except UnicodeEncodeError as e:
        raise LoadError("file name is not valid UTF-8") from e


def _read(key: str) -> tuple[bytes, int, float]:
    try:
        if is_url(key):
            fs, path = filesystem(key)
            info = fs.info(path)
            data = fs.cat_file(path)
            return data, int(info.get("size") or len(data)), _url_mtime(info)
        with open(os.fsencode(key), "rb") as f:
            st = os.fstat(f.fileno())
            return f.read(), st.st_size, st.st_mtime_ns / 1e9
    except FileNotFoundError as e:
        raise LoadError("file not found") from e
    except PermissionError as e:
        raise LoadError("permission denied") from e
    except IsADirectoryError as e:
        raise LoadError("is a directory") from e
    except OSError as e:
        raise LoadError(f"cannot read file ({e.strerror or e})") from e


def _url_mtime(info: dict) -> float:
    for key in ("mtime", "LastModified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
    return math.nan


def _caption(entry: Entry) -> str | None:
    """The image's sidecar caption; None when there is none or it cannot be one (as `index` does,
    a bad .txt -- oversized, not UTF-8, binary -- is ignored: the image itself is still embedded)."""
    try:
        return _read_caption(entry)
    except SidecarError:
        return None


def _read_caption(entry: Entry) -> str | None:
    side = entry.sidecar
    if side is None and entry.probe:
        stem = os.path.splitext(entry.key)[0]
        side = stem + ".txt"
        if not is_url(entry.key) and not os.path.isfile(os.fsencode(side)):
            return None
    if side is None:
        return None
    if not is_url(side):
        return read_sidecar(os.fsencode(side))
    try:
        fs, path = filesystem(side)
        with fs.open(path, "rb") as f:
            data = f.read(SIDECAR_MAX + 1)
    except (FileNotFoundError, OSError):
        return None
    return sidecar_text(data)
