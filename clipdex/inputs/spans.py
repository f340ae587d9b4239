"""Video frame spans in import metadata: the optional ``t`` and ``t_end`` columns (seconds).

A row with a ``t`` is one frame of the video at its path, standing for the seconds from ``t`` to
``t_end`` (``t_end`` missing: ``t``). An empty cell, a missing key or a null is "no t": the row is
a picture. Values come back as float64 arrays with NaN for "no t" (no Python object per row is
kept, so a million picture rows cost two arrays). Every bad value is a one-line ClipdexError
naming the file and the row (rows count from 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from clipdex.errors import ClipdexError

SPAN_COLUMNS = ("t", "t_end")
RULE = "t must be a finite number of seconds, 0 or more, and t_end one no smaller than t"


def _bad(name: str, row: int, column: str, value: Any, why: str) -> ClipdexError:
    return ClipdexError(f"{name}: row {row} has {column} = {value!r}, {why} (rows count from 0)")


def parse_values(values: list[Any], name: str, column: str) -> np.ndarray:
    """Numbers of a csv/jsonl column (strings, numbers, None) as float64, NaN where there is none."""
    n = len(values)
    if values.count("") + values.count(None) == n:  # pictures only (list.count: no Python loop)
        return np.full(n, np.nan)
    out = [math.nan] * n
    for row, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, str):
            s = v.strip()
            if not s:
                continue
            try:
                x = float(s)
            except ValueError:
                raise _bad(name, row, column, v, "not a number") from None
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _bad(name, row, column, v, "not a number")
        else:
            x = float(v)
        if not math.isfinite(x):
            raise _bad(name, row, column, v, "not a finite number")
        out[row] = x
    return np.array(out, np.float64)


def parse_arrow(col: Any, name: str, column: str) -> np.ndarray:
    """A pyarrow (chunked) column as float64, NaN where it is null; strings are parsed as numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = col.type
    if pa.types.is_null(kind):
        return np.full(len(col), np.nan)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return parse_values(col.to_pylist(), name, column)
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise ClipdexError(f"{name}: column '{column}' holds {kind} values, not numbers of seconds")
    null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
    x = np.asarray(pc.fill_null(pc.cast(col, pa.float64()), 0.0).to_numpy(zero_copy_only=False), np.float64)
    bad = np.flatnonzero(~null & ~np.isfinite(x))
    if len(bad):
        raise _bad(name, int(bad[0]), column, float(x[bad[0]]), "not a finite number")
    x = x.copy() if not x.flags.writeable else x
    x[null] = np.nan
    return x


def check_spans(
    t: np.ndarray | None, t_end: np.ndarray | None, name: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(t, t_end) checked, a missing t_end filled with its t; (None, None) when no row has a t."""
    if t is None and t_end is None:
        return None, None
    n = len(t if t is not None else t_end)
    t = np.full(n, np.nan) if t is None else t
    t_end = np.full(n, np.nan) if t_end is None else t_end
    has_t, has_end = ~np.isnan(t), ~np.isnan(t_end)
    if len(orphans := np.flatnonzero(has_end & ~has_t)):
        r = int(orphans[0])
        raise _bad(name, r, "t_end", float(t_end[r]), f"but no t; {RULE}")
    if len(neg := np.flatnonzero(has_t & (t < 0))):
        r = int(neg[0])
        raise _bad(name, r, "t", float(t[r]), f"below 0; {RULE}")
    if not has_t.any():
        return None, None
    t_end = np.where(has_t & ~has_end, t, t_end)
    if len(back := np.flatnonzero(has_t & (t_end < t))):
        r = int(back[0])
        raise _bad(name, r, "t_end", float(t_end[r]), f"before its t = {float(t[r])!r}; {RULE}")
    return t, t_end


def group_frames(values: Sequence[str], t: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The frame rows (those with a t) grouped by video: (rows, starts, repeated).

    ``rows`` lists each video's rows by ascending t, videos in the order of their first row;
    video ``k`` is ``rows[starts[k]:starts[k + 1]]``. A (path, t) given again counts once (the
    first row wins): ``repeated`` is how many rows were left out so."""
    rows = np.flatnonzero(~np.isnan(t))
    first: dict[str, int] = {}
    video = np.fromiter((first.setdefault(values[r], len(first)) for r in rows.tolist()), np.int64, len(rows))
    order = np.lexsort((rows, t[rows], video))  # by video, then t, then row
    rows, video = rows[order], video[order]
    ts = t[rows]
    again = np.zeros(len(rows), bool)
    again[1:] = (video[1:] == video[:-1]) & (ts[1:] == ts[:-1])
    rows, video = rows[~again], video[~again]
    starts = np.flatnonzero(np.r_[True, video[1:] != video[:-1]]) if len(rows) else np.empty(0, np.int64)
    return rows, starts, int(again.sum())
