"""A video's kept frames → spans: consecutive frames alike the first of their span merge into it.

`index` (``clipdex.library.video_indexing``) and `embed` (``clipdex.scale``) both merge with this,
so a static shot costs one item whichever command embedded it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MERGE_COSINE = 0.98


@dataclass(slots=True)
class Span:
    """The seconds ``[t, t_end)`` one kept frame stands for, and its unit vector."""

    t: float
    t_end: float
    vector: np.ndarray


def merge_spans(
    spans: list[Span], times: Sequence[float], vecs: np.ndarray, cosine: float = MERGE_COSINE
) -> None:
    """Append frames (their times and unit vectors, in order) to ``spans``: a frame alike the
    first frame of the last span (cosine ≥ ``cosine``) only extends it; ``t_end`` of each span
    is the time of the next frame kept (the caller sets the last one's with `close_spans`)."""
    for t, v in zip(times, vecs):
        if spans:
            spans[-1].t_end = t
            if float(np.dot(spans[-1].vector, v)) >= cosine:
                continue
        spans.append(Span(t, t, v))


def close_spans(spans: list[Span], duration: float | None, end: float) -> None:
    """The last span lasts to the video's end: its declared duration, or where the decode ended."""
    if spans:
        spans[-1].t_end = max(spans[-1].t, duration or end, end)
