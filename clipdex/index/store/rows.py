"""The typed rows the store hands out (no SQL here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Item:
    """One stored item, as search results need it."""

    id: int
    kind: str
    path: bytes | None
    text: str | None
    image_id: int | None
    source: str
    t: float | None = None  # a video frame's span in seconds (source "video"); None for the rest
    t_end: float | None = None


@dataclass(frozen=True, slots=True)
class VideoRecord:
    """A stored video as the scanner compares it: its frame items and the file facts they share."""

    ids: tuple[int, ...]
    mtime_ns: int
    size: int
    content_hash: bytes | None


@dataclass(frozen=True, slots=True)
class PhotoMeta:
    """What indexing learns about a photo besides its vector: when it was taken (unix seconds)
    and the decoded image's width and height (after EXIF rotation)."""

    taken_at: float | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What the scanner compares against: stat of a stored file."""

    id: int
    mtime_ns: int | None  # None for an imported item (no file seen yet)
    size: int | None
    source: str = "scan"
    content_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class Caption:
    """A sidecar caption as stored: its id, the .txt it came from, and its text."""

    id: int
    path: bytes
    mtime_ns: int
    size: int
    text: str


@dataclass(frozen=True, slots=True)
class Merged:
    """What `KeyedMerge.keyed` did with one chunk of keyed rows (row numbers index the chunk)."""

    new_ids: np.ndarray
    new_rows: np.ndarray
    updated_ids: np.ndarray
    updated_rows: np.ndarray
    unchanged: int
