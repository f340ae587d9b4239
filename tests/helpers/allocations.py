"""Pillow's image allocations watched in the test process, for the decompression-bomb tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from PIL import Image

from clipdex.retrieval import decode

LIMIT = 100_000
HUGE = 1 << 19  # 524288 x 524288 = 274877906944 pixels claimed


class Allocations:
    """Pillow's image allocations (``Image.core.new`` / ``fill``), as pixel counts.

    One over ``limit`` is recorded and refused with MemoryError, so even a broken decoder never
    allocates a bomb in the test process; ``uncovered`` are those the pixel budget had not reserved.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.over: list[int] = []
        self.uncovered: list[int] = []

    def wrap(self, real: Callable) -> Callable:
        def allocate(mode: str, size: tuple[int, int], *args: object) -> object:
            pixels = size[0] * size[1]
            budget = decode._budget
            if budget is not None and budget.used < pixels:
                self.uncovered.append(pixels)
            if pixels > self.limit:
                self.over.append(pixels)
                raise MemoryError(f"test refused to allocate {pixels} pixels")
            return real(mode, size, *args)

        return allocate


def spy_on_allocations(monkeypatch: pytest.MonkeyPatch) -> Allocations:
    """Pillow's allocations recorded (and bombs refused) for one test; the `allocations` fixtures."""
    spy = Allocations(LIMIT)
    monkeypatch.setattr(decode, "MAX_PIXELS", LIMIT)
    monkeypatch.setattr(decode, "_budget", decode.PixelBudget(10 * LIMIT))
    for name in ("new", "fill"):
        monkeypatch.setattr(Image.core, name, spy.wrap(getattr(Image.core, name)))
    return spy


def too_large(pixels: int, limit: int = LIMIT) -> str:
    return f"image too large: {pixels} pixels (limit {limit})"
