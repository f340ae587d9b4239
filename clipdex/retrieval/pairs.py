"""Image–caption pairs for fine-tuning and eval: reading, decoding with skip counting, the splits.

PAIRS is a ``.csv``/``.tsv`` with a header or a ``.jsonl``, with columns ``image`` and ``caption``
(relative image paths resolve against the PAIRS file's folder), or a folder of images with sidecar
captions (``photo.jpg`` + ``photo.txt``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipdex.errors import ClipdexError
from clipdex.index.scan import SidecarError, read_sidecar
from clipdex.textfiles import JSONL_SUFFIXES, TABLE_SUFFIXES, read_records, require_file

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


@dataclass
class DecodedPairs:
    """Pairs whose image decoded, the decoded (prepared) images by path, and what was skipped."""

    pairs: list[Pair]
    images: dict[str, Any]
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
) -> DecodedPairs:
    """Decode every distinct image once (threads: Pillow releases the GIL), keep ``prepare(image)``.

    Pairs whose image is missing or unreadable are skipped and counted; more than ``max_bad`` of
    them is an error, since that usually means a wrong base folder rather than a few bad files.
    """
    if opener is None:
        from clipdex.retrieval.decode import open_image as opener

    def load(path: str) -> tuple[str, Any, str | None]:
        try:
            return path, prepare(opener(path)), None
        except FileNotFoundError:
            return path, None, "file not found"
        except (OSError, ClipdexError, ValueError) as e:  # DecodeError is a ClipdexError
            return path, None, str(e).splitlines()[0] if str(e) else type(e).__name__

    unique = list(dict.fromkeys(p.image for p in pairs))
    images, bad = {}, []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for path, image, reason in pool.map(load, unique):
            if reason is None:
                images[path] = image
            else:
                bad.append((path, reason))
    kept = [p for p in pairs if p.image in images]
    skipped = len(pairs) - len(kept)
    if pairs and skipped > max_bad * len(pairs):
        first = f"{bad[0][0]}: {bad[0][1]}" if bad else ""
        raise ClipdexError(
            f"{skipped} of {len(pairs)} pairs have a missing or unreadable image (more than "
            f"{max_bad:.0%}; are relative paths right?), e.g. {first}"
        )
    return DecodedPairs(kept, images, skipped, bad)


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
