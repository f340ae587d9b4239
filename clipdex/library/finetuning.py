"""`Library.finetune`: pairs in, a fine-tuned model out (`Library.finetune` applies it when asked).

Joins reading PAIRS (or the library's own captions), the seeded train/validation/test split and
training (`clipdex.retrieval.training.finetune`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipdex.errors import ClipdexError
from clipdex.retrieval.training.pairs import MIN_TEST_IMAGES, PairsArg, coerce_pairs, split_pairs

if TYPE_CHECKING:
    from clipdex.library.parts import Parts
    from clipdex.retrieval.training.finetune import FinetuneConfig, FinetuneResult


def new_model_dir(parent: Path) -> Path:
    """``finetune-YYYYmmdd-HHMMSS`` under ``parent``, with a suffix if that name is taken."""
    base = time.strftime("finetune-%Y%m%d-%H%M%S")
    path, n = parent / base, 1
    while path.exists():
        n += 1
        path = parent / f"{base}-{n}"
    return path


CAPTION_SOURCES = ("sidecars", "ocr", "all")


def library_pairs(parts: Parts, captions_from: str = "sidecars") -> list[tuple[str, str]]:
    """The library's own (image, caption) pairs: its sidecar captions, the text read in its
    pictures (``index --ocr``: a screenshot's words teach the model their vocabulary), or both."""
    if captions_from not in CAPTION_SOURCES:
        raise ValueError(f"captions_from must be one of {', '.join(CAPTION_SOURCES)}, not {captions_from!r}")
    found: list[tuple[bytes, str]] = []
    if captions_from in ("sidecars", "all"):
        found += parts.store.items.caption_pairs()
    if captions_from in ("ocr", "all"):
        found += parts.store.texts.pairs()
    if not found:
        what = {"sidecars": "captioned images (sidecar .txt files)",
                "ocr": "pictures with text read in them (`clipdex index FOLDER --ocr` reads it)",
                "all": "captioned images nor pictures with text read in them"}[captions_from]  # fmt: skip
        raise ClipdexError(f"the library at {parts.path} has no {what}; give PAIRS")
    return [(os.fsdecode(p), t) for p, t in found]


def finetune_library(
    parts: Parts,
    pairs: PairsArg = None,
    *,
    val: PairsArg = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    config: FinetuneConfig | None = None,
    out: str | os.PathLike | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    problem: Callable[[str, str], None] | None = None,
    on_start: Callable[[str, int, int, int], None] | None = None,
    on_step: Callable[[int, int, dict[str, Any]], None] | None = None,
    captions_from: str = "sidecars",
) -> FinetuneResult:
    """See `Library.finetune`."""
    from clipdex.retrieval.training.finetune import FinetuneConfig, finetune

    cfg = config or FinetuneConfig()
    if pairs is None:
        train, empty = coerce_pairs(library_pairs(parts, captions_from))
    else:
        train, empty = coerce_pairs(pairs)
    if val is not None:
        held, val_empty = coerce_pairs(val)
        empty += val_empty
        held_images = {p.image for p in held}
        rest = [p for p in train if p.image not in held_images]
        # validation comes from ``val``; the test split still comes out of PAIRS
        train, test, _ = split_pairs(rest, test_fraction, cfg.seed) if test_fraction > 0 else (rest, [], [])
        if len({p.image for p in test}) < MIN_TEST_IMAGES:
            train, test = rest, []
    else:
        train, held, test = split_pairs(train, val_fraction, cfg.seed, test_fraction)
    lm = parts.models.model
    out_dir = Path(out).expanduser() if out is not None else new_model_dir(parts.path / "models")
    if on_start is not None:
        on_start(str(lm.spec), len(train), len(held), len(test))
    result = finetune(lm, train, held, cfg, out_dir, progress=progress, test=test, on_step=on_step)
    result.empty_captions = empty
    if problem is not None:
        for path, reason in result.bad_images:
            problem(path, reason)
    return result
