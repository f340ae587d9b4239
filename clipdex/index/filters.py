"""Search filters (folder, date range, captioned, minimum score) that keep top-k exact.

A filtered search returns the best k among the items that match, never fewer while more match.
The matching items are selected in SQLite (folder prefixes walk the (kind, path) index, dates the
(kind, taken_at) one), then, by how many match: a broad filter takes the first matches of a short
unfiltered ranking (read deeper until k match); up to EXACT_MAX matches are ranked exactly from
their stored vectors; in between the FAISS index searches with an ID selector (an IVF index
probing more lists the fewer match), falling back to the exact ranking if it still finds fewer
than k. Scores are always the exact cosines of the stored vectors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np

from clipdex.index.store.database import Store

if TYPE_CHECKING:
    from clipdex.index.faiss.vector_index import VectorIndex
    from clipdex.index.store.where import Where

# Up to this many matching items are ranked exactly from SQLite (a few ms per thousand rows);
# beyond it the FAISS scan with a selector is cheaper than reading the vectors.
EXACT_MAX = 256
EXACT_CHUNK = 8192  # rows per float64 block in the exact ranking
# From this share of the collection up, the unfiltered ranking holds k matches within about
# k / share candidates: cheaper than listing every matching id for a selector.
OVERFETCH_SHARE = 0.2

DateLike = str | datetime | date | float | int
MEDIA = ("all", "photos", "videos")  # what `Filter.media` keeps: everything, photos only, videos only


def parse_date(value: DateLike) -> float:
    """ISO 8601 date or date-time (or a datetime/date/unix seconds) -> unix seconds.

    A date alone is local midnight; a time without a zone is local time.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a date: {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).timestamp()
    try:
        text = str(value).strip()
        return datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text).timestamp()
    except ValueError:
        raise ValueError(f"not an ISO 8601 date: {value!r} (e.g. 2024-06-01 or 2024-06-01T18:30)") from None


@dataclass(frozen=True)
class Filter:
    """What a search keeps: items under any of ``under`` (folders, path prefixes by component),
    taken at or after ``after`` and before ``before`` (ISO 8601 strings, datetimes or unix
    seconds; the photo's EXIF date, else its file's mtime), with or without a caption
    (``captioned`` True/False; None: either), scoring at least ``min_score``, and matching every
    one of ``words`` (word queries over the text read in the picture, its caption and file name;
    FTS5 syntax, see `clipdex.index.store.words.match_query`). ``media``: "all", "photos" (no
    video moments) or "videos" (only them); image searches only.

    For ``target="texts"`` the folder and date conditions apply to a text's linked image (free
    texts have none, so they never match them).
    """

    under: Sequence[str | bytes | os.PathLike] = ()
    after: DateLike | None = None
    before: DateLike | None = None
    captioned: bool | None = None
    min_score: float | None = None
    words: Sequence[str] = ()
    media: str = "all"
    # ``words`` as FTS5 queries, translated (and checked) once here for every search that uses them
    word_queries: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from clipdex.index.store.words import match_query

        if self.media not in MEDIA:
            raise ValueError(f"media must be one of {', '.join(MEDIA)}, not {self.media!r}")
        words = (self.words,) if isinstance(self.words, str) else tuple(self.words)
        object.__setattr__(self, "words", tuple(dict.fromkeys(words)))
        # a bad query fails here, with one clear line
        object.__setattr__(self, "word_queries", tuple(match_query(w) for w in self.words))
        under = [self.under] if isinstance(self.under, (str, bytes, os.PathLike)) else list(self.under)
        roots = tuple(os.path.abspath(os.fsencode(os.path.expanduser(u) if isinstance(u, str) else u))
                      for u in under)  # fmt: skip
        object.__setattr__(self, "under", tuple(dict.fromkeys(roots)))
        for name in ("after", "before"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else parse_date(value))
        if self.min_score is not None:
            object.__setattr__(self, "min_score", float(self.min_score))

    @property
    def restricts_items(self) -> bool:
        """Whether some items are excluded whatever their score."""
        bounds = (self.after, self.before, self.captioned)
        return bool(self.under or self.words or self.media != "all") or any(b is not None for b in bounds)


def exact_top_k(store: Store, ids: np.ndarray, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Best k of ``ids`` by the exact cosine of their stored vectors (float64 sums of the float32
    products, as the index's re-ranking computes them), ties by ascending id."""
    q = np.asarray(query, np.float64).reshape(-1)
    best_ids, best_scores = np.zeros(0, np.int64), np.zeros(0)
    for start in range(0, len(ids), EXACT_CHUNK):
        chunk = ids[start : start + EXACT_CHUNK]
        vecs = store.vectors.get(chunk).astype(np.float64)
        scores = (vecs * q).sum(axis=1)
        all_ids, all_scores = np.concatenate([best_ids, chunk]), np.concatenate([best_scores, scores])
        order = np.lexsort((all_ids, -all_scores))[:k]
        best_ids, best_scores = all_ids[order], all_scores[order]
    return [(int(i), float(s)) for i, s in zip(best_ids, best_scores)]


def search(
    index: VectorIndex,
    store: Store,
    kind: str,
    query: np.ndarray,
    k: int,
    filt: Filter | None,
    get_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[tuple[int, float]]:
    """Top-k (id, exact cosine) of one query among the items ``filt`` keeps, best first.

    First the unfiltered top 4k + 10: enough when the filter is broad. Else by the number m of
    matching items (of n): none; m >= OVERFETCH_SHARE * n: the unfiltered ranking read deeper
    (about 2kn/m, widening until k match); m <= EXACT_MAX: the exact ranking of their stored
    vectors; in between: the index with an ID selector.
    """
    if filt is None or not filt.restricts_items:
        hits = index.search(query[None], k, get_vectors or store.vectors.get)[0]
    else:
        with store.snapshot():
            hits = _filtered(index, store, kind, query, k, filt)
    if filt is not None and filt.min_score is not None:
        hits = [(i, s) for i, s in hits if s >= filt.min_score]
    return hits


def _filtered(
    index: VectorIndex, store: Store, kind: str, query: np.ndarray, k: int, filt: Filter
) -> list[tuple[int, float]]:
    where = store.selection.where(kind, filt)
    total = max(index.ntotal, 1)
    # A broad filter finds its k in a short unfiltered list: try that before counting the matches
    # (counting a large share of a big library costs more than the search). Words say at once
    # (FTS5 counts its matches in well under a millisecond) whether they can be broad.
    if _maybe_broad(store, where, total):
        hits = _overfetch(index, store, where, query, k, fetch=min(total, 4 * k + 10), widen=False)
        if hits is not None and len(hits) >= k:
            return hits
    m = store.selection.count_where(where)
    if m == 0:
        return []
    if m > EXACT_MAX and m >= OVERFETCH_SHARE * total:
        hits = _overfetch(index, store, where, query, k, fetch=int(2 * k * total / m) + 10, widen=True)
        if hits is not None:
            return hits
    allowed = store.selection.matching_ids(kind, filt)
    if len(allowed) <= EXACT_MAX:
        return exact_top_k(store, allowed, query, k)
    hits = index.search(query[None], k, store.vectors.get, allowed=allowed)[0]
    if len(hits) < min(k, len(allowed)):  # e.g. HNSW's graph walk ran dry among the allowed
        hits = exact_top_k(store, allowed, query, k)
    return hits


def _maybe_broad(store: Store, where: Where, total: int) -> bool:
    return not where.words or min(store.words.count(q) for q in where.words) >= OVERFETCH_SHARE * total


def _overfetch(
    index: VectorIndex, store: Store, where: Where, query: np.ndarray, k: int, fetch: int, widen: bool,
) -> list[tuple[int, float]] | None:  # fmt: skip
    """The first k matching items of the unfiltered ranking's top ``fetch`` (widened 4x while
    short when ``widen``), or fewer when the whole collection holds fewer; None when the index
    runs out of candidates first (an IVF index probes only some lists)."""
    while True:
        hits = index.search(query[None], fetch, store.vectors.get)[0]
        keep = store.selection.kept_among(where, [i for i, _ in hits])
        good = [h for h in hits if h[0] in keep]
        if len(good) >= k or len(hits) >= index.ntotal:  # or the ranking held every item
            return good[:k]
        if len(hits) < fetch or not widen:
            return None
        fetch *= 4
