"""Batching helpers for SQL over id lists: runs of consecutive ids, fixed-size chunks."""

from __future__ import annotations

from collections.abc import Iterator


def runs(ids: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted ids as (first, last) runs of consecutive values."""
    if not ids:
        return
    first = last = ids[0]
    for i in ids[1:]:
        if i == last + 1:
            last = i
        elif i != last:
            yield first, last
            first = last = i
    yield first, last


def chunks(seq: list, size: int) -> Iterator[list]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
