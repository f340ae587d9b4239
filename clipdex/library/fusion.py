"""Ranking by words, and fusing it with the ranking by meaning (``search --by words|both``).

``words`` orders the items whose word documents match any word of the query by FTS5's BM25;
``both`` fuses that ranking with the vector ranking by reciprocal rank fusion (RRF: each item
scores the sum of 1 / (60 + its rank) over the rankings it is in, Cormack et al. 2009). Either
way every hit's score is its true cosine to the query, also for an item found only by its words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from clipdex.index.filters import Filter
from clipdex.index.store.batches import chunks
from clipdex.index.store.words import ranking_query

if TYPE_CHECKING:
    from clipdex.index.store.database import Store

RRF_K = 60
DEPTH = 100  # each ranking contributes at least its best DEPTH items to the fusion
BY = ("meaning", "words", "both")


def ranking(
    filt: Filter | None, words: str | Sequence[str] | None, by: str | None, text: str | None, reads_text: bool
) -> tuple[Filter | None, str]:
    """`Library.search`'s filter with ``words`` added, and its ranking: ``by``, else "both" where
    the library reads text and the query has ``text``, else "meaning"."""
    if words is not None:
        more = (words,) if isinstance(words, str) else tuple(words)
        filt = replace(filt or Filter(), words=(*(filt.words if filt else ()), *more))
    by = by or ("both" if text and reads_text else "meaning")
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}, not {by!r}")
    if by == "words" and not text:
        raise ValueError("by='words' ranks by the query's words: give text=")
    return filt, by


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Ids by fused score, best first; ties by the first ranking they appear in, then by id."""
    score: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            score[item] = score.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(score, key=lambda i: (-score[i], i))


def word_ranking(store: Store, kind: str, filt: Filter | None, text: str, depth: int) -> list[int]:
    """The best ``depth`` items of ``kind`` that ``filt`` keeps whose words match any of ``text``'s."""
    query = ranking_query(text)
    if query is None or not store.has_table("words"):
        return []
    where = store.selection.where(kind, filt or Filter())
    out: list[int] = []
    with store.snapshot():
        for chunk in chunks(store.words.ranked(query), 512):
            keep = store.selection.kept_among(where, chunk)
            out += [i for i in chunk if i in keep]
            if len(out) >= depth:
                break
    return out[:depth]


def fused_search(
    search: Callable[[int, Filter | None], list[tuple[int, float]]],
    store: Store,
    kind: str,
    query: np.ndarray,
    k: int,
    filt: Filter | None,
    by: str,
    text: str,
) -> list[tuple[int, float]]:
    """Top-k (id, cosine) ranked ``by`` words or both; ``search(n, filter)`` is the vector ranking."""
    depth = max(k, DEPTH)
    loose = replace(filt, min_score=None) if filt is not None else None
    words = word_ranking(store, kind, loose, text, depth)
    meaning = search(depth, loose) if by == "both" else []
    order = words if by == "words" else rrf([[i for i, _ in meaning], words])
    cosine = dict(meaning)
    missing = [i for i in order if i not in cosine]
    if missing:  # found only by words: their true cosines, from the stored vectors
        vecs = store.vectors.get(np.asarray(missing, np.int64)).astype(np.float64)
        cosine.update(zip(missing, (vecs * np.asarray(query, np.float64).reshape(-1)).sum(axis=1).tolist()))
    hits = [(i, float(cosine[i])) for i in order if i in cosine]
    if filt is not None and filt.min_score is not None:
        hits = [(i, s) for i, s in hits if s >= filt.min_score]
    return hits[:k]
