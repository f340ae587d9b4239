"""Typed records that the Library hands out (their fields are those of the JSON contracts)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from clipdex.inputs.paths import path_b64, shown_path


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One search hit; ``to_dict()`` is its `search --json` line.

    ``path`` is the absolute image path as Python spells it (``os.fsdecode``: a name that is not
    UTF-8 keeps its bytes as surrogate escapes, so ``open(path)`` works); ``raw_path`` the bytes.
    """

    rank: int
    score: float
    modality: str  # "image" | "video" (a moment of a video) | "text"
    id: int
    path: str | None  # an image's (or video's) path; a text's linked image, or None
    text: str | None = None
    raw_path: bytes | None = field(default=None, repr=False, compare=False)
    ocr: str | None = None  # the text read in the picture (lines joined by newlines), if any
    t: float | None = None  # a video moment: the span of seconds [t, t_end) it stands for
    t_end: float | None = None

    @property
    def path_bytes(self) -> bytes | None:
        """The exact bytes of the path (what `--paths` and `-0` print)."""
        return exact_path(self.path, self.raw_path)

    @property
    def shown_path(self) -> str | None:
        """The path for people and JSON: valid UTF-8 as is, other bytes as U+FFFD."""
        return shown_path(self.path_bytes)

    def to_dict(self) -> dict:
        """JSON-safe: ``path`` with replacement characters, plus ``path_b64`` (the exact bytes)
        only when the name is not valid UTF-8."""
        d = {"rank": self.rank, "score": self.score, "modality": self.modality, "id": self.id}
        d["path"] = self.shown_path
        if self.modality == "text":
            d["text"] = self.text
        if self.modality == "video":
            d["t"], d["t_end"] = self.t, self.t_end
        d.update(path_b64(self.path_bytes))
        if self.ocr is not None:
            d["ocr"] = self.ocr
        return d


def clock(t: float) -> str:
    """Seconds as ``m:ss`` (``h:mm:ss`` from an hour up): a video moment in the table and the page."""
    s = int(t)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def exact_path(path: str | None, raw: bytes | None) -> bytes | None:
    """A record's path as bytes: the stored ``raw`` bytes, else ``path`` re-encoded (``os.fsencode``)."""
    if raw is not None:
        return raw
    return os.fsencode(path) if path is not None else None


@dataclass(slots=True)
class IndexStats:
    """Counts of one `index` run; ``to_dict()`` is the `index --json` object."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    texts_added: int = 0
    texts_updated: int = 0
    texts_removed: int = 0
    moved: int = 0
    skipped_failed: int = 0  # remembered failures, not retried (the file has not changed)
    dropped: int | None = None  # set when the run re-embedded: images dropped (--drop-unembeddable)
    ocr_read: int | None = None  # set when the library reads text: pictures read in this run
    ocr_failed: int | None = None  # ... and those whose text could not be read (still indexed)
    frames: int | None = None  # set when videos were (re-)indexed: the frame items stored for them

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("dropped", "ocr_read", "ocr_failed", "frames"):
            if d[key] is None:
                d.pop(key)
        return d


@dataclass(slots=True)
class WatchBatch:
    """What one batch of `Library.watch` applied; ``to_dict()`` is its `watch --json` line."""

    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    texts_added: int = 0
    texts_updated: int = 0
    texts_removed: int = 0

    def to_dict(self) -> dict:
        return {"added": self.added, "updated": self.updated, "moved": self.moved, "removed": self.removed,
                "failed": self.failed}  # fmt: skip

    def any(self) -> bool:
        return self.items() > 0

    def items(self) -> int:
        return sum(asdict(self).values())


@dataclass(slots=True)
class ImportCounts:
    """Counts of one `import-embeddings` run; ``to_dict()`` is its ``--json`` object."""

    imported: int = 0  # new items
    updated: int = 0  # known key (path or text), another vector: updated in place
    unchanged: int = 0  # known key, same vector (and rows repeating a key within the input)
    missing_files: int = 0  # image paths that do not exist on this machine

    def count(self, merged: Any) -> None:
        """Add one merged chunk's counts (a `clipdex.index.store.rows.Merged`)."""
        self.imported += len(merged.new_ids)
        self.updated += len(merged.updated_ids)
        self.unchanged += merged.unchanged

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Reembedded:
    """What a re-embedding did: ``total`` items encoded, ``dropped`` images deleted (no file)."""

    total: int
    dropped: int


@dataclass(frozen=True, slots=True)
class DuplicateItem:
    """One image of a near-duplicate group; ``score`` is its cosine to the group's first image.

    ``path`` is spelled as in `SearchResult` (``os.fsdecode``); ``raw_path`` holds its bytes.
    """

    id: int
    path: str | None
    score: float
    width: int | None
    height: int | None
    size: int | None  # file size in bytes
    raw_path: bytes | None = field(default=None, repr=False, compare=False)
    t: float | None = None  # a moment of a video: where it starts (s)

    @property
    def path_bytes(self) -> bytes | None:
        return exact_path(self.path, self.raw_path)

    @property
    def shown_path(self) -> str | None:
        return shown_path(self.path_bytes)

    def to_dict(self) -> dict:
        """As `SearchResult.to_dict`: ``path`` with replacement characters, ``path_b64`` when needed."""
        d = {"id": self.id, "path": self.shown_path, "score": self.score, "width": self.width,
             "height": self.height, "size": self.size}  # fmt: skip
        if self.t is not None:
            d["t"] = self.t
        d.update(path_b64(self.path_bytes))
        return d


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line of text in a picture: its corners as fractions of width and height (clockwise
    from top left, as the reader gives them) and the reader's confidence (0–1)."""

    text: str
    box: tuple[tuple[float, float], ...]
    confidence: float

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "box": [list(p) for p in self.box],
            "confidence": round(self.confidence, 4),
        }
