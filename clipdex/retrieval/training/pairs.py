"""Image–caption pairs for fine-tuning and eval: reading, decoding with skip counting, the splits.

PAIRS is a ``.csv``/``.tsv`` with a header or a ``.jsonl``, with columns ``image`` and ``caption``
(relative image paths resolve against the PAIRS file's folder), or a folder of images with sidecar
captions (``photo.jpg`` + ``photo.txt``).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipdex.errors import ClipdexError
from clipdex.inputs.sidecars import SidecarError, read_sidecar
from clipdex.inputs.tables import JSONL_SUFFIXES, TABLE_SUFFIXES, read_records, require_file

IMAGE_EXTS = {
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".heic", ".heif",
}  # fmt: skip
MAX_BAD_FRACTION = 0.10


@dataclass(frozen=True)
class Pair:
    image: str  # absolute path
    caption: str


PairsArg = str | os.PathLike | Sequence[Pair | tuple[str, str]] | None  # a PAIRS path or the pairs


class ViewCache:
    """Prepared (decoded, resized, cropped) images by path, holding at most ``max_bytes`` of them.

    Every path it knows decoded once; the first ones offered are kept until the bound is reached,
    any other is decoded again on each use (``load``). Decoding is deterministic, so a view is the
    same whether it came from the cache or from the file: the bound changes speed, never results.
    Nothing is evicted: under shuffled access any fixed set is as good as LRU, without the churn,
    and DataLoader worker processes share the parent's cache copy-on-write.
    """

    def __init__(self, load: Callable[[str], Any], max_bytes: int | None = None):
        self._load = load
        self.max_bytes = max_bytes  # None: keep every view
        self.nbytes = 0
        self._views: dict[str, Any] = {}
        self._known: set[str] = set()

    def offer(self, path: str, view: Any) -> None:
        """Record that ``path`` decoded; keep its ``view`` while it fits under the bound."""
        self._known.add(path)
        size = view_nbytes(view)
        if self.max_bytes is None or self.nbytes + size <= self.max_bytes:
            self._views[path] = view
            self.nbytes += size

    @property
    def cached(self) -> int:
        return len(self._views)

    def __contains__(self, path: object) -> bool:
        return path in self._known

    def __len__(self) -> int:
        return len(self._known)

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __getitem__(self, path: str) -> Any:
        view = self._views.get(path)
        if view is not None:
            return view
        if path not in self._known:
            raise KeyError(path)
        try:
            return self._load(path)
        except (OSError, ClipdexError, ValueError) as e:  # changed or removed since the first pass
            raise ClipdexError(f"{path}: cannot read the image again during training ({e})") from e


def view_nbytes(view: Any) -> int:
    """Memory held by a prepared view: a PIL image's pixels, or an array's/tensor's bytes."""
    if hasattr(view, "nbytes"):
        return int(view.nbytes)
    if hasattr(view, "element_size"):
        return int(view.element_size() * view.nelement())
    if hasattr(view, "getbands"):
        return view.width * view.height * len(view.getbands())
    return sys.getsizeof(view)


@dataclass
class DecodedPairs:
    """Pairs whose image decoded, the decoded (prepared) images by path, and what was skipped."""

    pairs: list[Pair]
    images: ViewCache
    skipped: int  # pairs dropped because their image is missing or unreadable
    bad_images: list[tuple[str, str]]  # (path, reason)


def read_pairs(source: str | Path) -> tuple[list[Pair], int]:
    """Read PAIRS; return (pairs with a non-empty caption, number of empty captions dropped)."""
    source = Path(source).expanduser()
    if source.is_dir():
        rows = _folder_rows(source)
        base = source
    else:
        require_file(source, "pairs file")
        base = source.resolve().parent
        if source.suffix.lower() not in TABLE_SUFFIXES + JSONL_SUFFIXES:
            raise ClipdexError(f"{source}: pairs must be a .csv, .tsv or .jsonl file or a folder of images")
        rows = _table_rows(source)
    pairs, empty = [], 0
    for image, caption in rows:
        caption = (caption or "").strip()
        if not caption:
            empty += 1
            continue
        path = Path(str(image).strip()).expanduser()
        pairs.append(Pair(str(path if path.is_absolute() else (base / path).resolve()), caption))
    return pairs, empty


def coerce_pairs(source: PairsArg) -> tuple[list[Pair], int]:
    """(pairs, empty captions dropped) from a PAIRS path or a sequence of (image, caption)."""
    if isinstance(source, (str, os.PathLike)):
        return read_pairs(source)
    pairs, empty = [], 0
    for item in source or []:
        image, caption = (item.image, item.caption) if isinstance(item, Pair) else item
        caption = (caption or "").strip()
        if not caption:
            empty += 1
            continue
        pairs.append(Pair(str(Path(image).expanduser().resolve()), caption))
    return pairs, empty


def _table_rows(path: Path) -> list[tuple[str, str]]:
    fields, rows = read_records(path)
    missing = [c for c in ("image", "caption") if c not in fields]
    if missing and (rows or path.suffix.lower() not in JSONL_SUFFIXES):
        shown = ", ".join(repr(c) for c in fields) or "none"
        raise ClipdexError(f"{path}: needs columns 'image' and 'caption'; found {shown}")
    return [(r.get("image") or "", r.get("caption") or "") for r in rows]


def _folder_rows(folder: Path) -> list[tuple[str, str]]:
    rows = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = set(files)
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if name.startswith(".") or ext.lower() not in IMAGE_EXTS or f"{stem}.txt" not in names:
                continue
            try:
                caption = read_sidecar(os.path.join(root, f"{stem}.txt")) or ""
            except SidecarError:  # binary, oversized or unreadable: not a caption
                caption = ""
            rows.append((str(Path(root, name).resolve()), caption))
    if not rows:
        raise ClipdexError(f"{folder}: no images with sidecar captions (photo.jpg + photo.txt) found")
    return rows


def decode_pairs(
    pairs: Sequence[Pair],
    prepare: Callable[[Any], Any] = lambda im: im,
    opener: Callable[[str], Any] | None = None,
    workers: int = 4,
    max_bad: float = MAX_BAD_FRACTION,
    cache_bytes: int | None = None,
) -> DecodedPairs:
    """Decode every distinct image once (threads: Pillow releases the GIL) to find the bad ones,
    keeping ``prepare(image)`` in a `ViewCache` of at most ``cache_bytes`` (None: all of them).

    Images are decoded in ``pairs`` order, so the first ones are those cached: put the ones used
    most (validation, evaluated every epoch) first. Pairs whose image is missing or unreadable
    are skipped and counted; more than ``max_bad`` of them is an error, since that usually means a
    wrong base folder rather than a few bad files.
    """
    from clipdex.retrieval.prefetch import ordered_prefetch

    if opener is None:
        from clipdex.retrieval.decode import open_image as opener

    def load(path: str) -> Any:
        return prepare(opener(path))

    views = ViewCache(load, cache_bytes)
    bad = []
    unique = list(dict.fromkeys(p.image for p in pairs))
    # ordered and bounded: a view is held only until offered (kept or dropped), never all at once
    for path, result in ordered_prefetch(load, unique, max(1, workers), ahead=4 * max(1, workers)):
        if not isinstance(result, BaseException):
            views.offer(path, result)
        elif isinstance(result, FileNotFoundError):
            bad.append((path, "file not found"))
        elif isinstance(result, (OSError, ClipdexError, ValueError)):  # DecodeError is a ClipdexError
            bad.append((path, str(result).splitlines()[0] if str(result) else type(result).__name__))
        else:
            raise result
    kept = [p for p in pairs if p.image in views]
    skipped = len(pairs) - len(kept)
    if pairs and skipped > max_bad * len(pairs):
        first = f"{bad[0][0]}: {bad[0][1]}" if bad else ""
        raise ClipdexError(
            f"{skipped} of {len(pairs)} pairs have a missing or unreadable image (more than "
            f"{max_bad:.0%}; are relative paths right?), e.g. {first}"
        )
    return DecodedPairs(kept, views, skipped, bad)


MIN_TEST_IMAGES = 5  # a smaller test split says too little; the figures then come from validation


def split_pairs(
    pairs: Sequence[Pair], val_fraction: float = 0.1, seed: int = 0, test_fraction: float = 0.0
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Seeded (train, validation, test) split by UNIQUE image: an image and all its captions land on
    one side. The result depends only on the set of images, the fractions and the seed.

    The test split is empty when ``test_fraction`` is 0 or it would hold fewer than
    ``MIN_TEST_IMAGES`` images (or leave no training image).
    """
    if not 0 < val_fraction < 1:
        raise ClipdexError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ClipdexError(f"--test-fraction must be at least 0 and leave some to train on: {test_fraction}")
    images = sorted({p.image for p in pairs})
    if len(images) < 2:
        raise ClipdexError("need at least 2 distinct images to hold some out for validation")
    random.Random(seed).shuffle(images)
    n_val = min(len(images) - 1, max(1, round(len(images) * val_fraction)))
    n_test = round(len(images) * test_fraction)
    if n_test < MIN_TEST_IMAGES or n_val + n_test >= len(images):
        n_test = 0
    val_images, test_images = set(images[:n_val]), set(images[n_val : n_val + n_test])
    train = [p for p in pairs if p.image not in val_images and p.image not in test_images]
    val = [p for p in pairs if p.image in val_images]
    test = [p for p in pairs if p.image in test_images]
    return train, val, test
