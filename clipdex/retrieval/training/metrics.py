"""Retrieval metrics on image–caption pairs, both directions: Recall@K, median rank, mAP.

The one implementation behind `clipdex eval` and fine-tuning's held-out figures.

Queries and positives. Captions are grouped by exact text and images by path, so a query is a
unique caption (text->image) or a unique image (image->text). A query's positives are everything
paired with it: an image with three captions has three positive texts, and a caption shared by two
images ("a red bus") has both images as positives. Recall@K counts a hit when any positive is in the
top K; the median rank is that of the first positive; AP averages precision at every positive.

Ties are ranked pessimistically: a non-positive that scores the same as a positive (within
``TIE_EPS``) is placed before it, so identical vectors never flatter a figure and the result does not
depend on file order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from clipdex.retrieval.training.pairs import Pair

KS = (1, 5, 10)
KEYS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")
TIE_EPS = 1e-6  # scores closer than this count as tied (float32 cosines of identical vectors)


def positive_ranks(scores: np.ndarray, positive: np.ndarray) -> list[np.ndarray]:
    """For each query row, the 1-based ranks of its positives, best first, ties pessimistic.

    ``scores`` (Q, C) and the boolean ``positive`` (Q, C). The i-th best positive's rank is i plus
    the number of non-positives scoring at least its score (minus ``TIE_EPS``).
    """
    out = []
    for row, pos in zip(scores, positive, strict=True):
        neg = np.sort(row[~pos])
        p = np.sort(row[pos])[::-1]
        above = len(neg) - np.searchsorted(neg, p - TIE_EPS, side="left")
        out.append(np.arange(1, len(p) + 1) + above)
    return out


def _direction(scores: np.ndarray, positive: np.ndarray, prefix: str, ks: Sequence[int]) -> dict[str, float]:
    ranks = positive_ranks(scores, positive)
    first = np.array([r[0] for r in ranks])
    ap = [float(np.mean(np.arange(1, len(r) + 1) / r)) for r in ranks]
    out = {f"{prefix}_r{k}": float(np.mean(first <= k)) for k in ks}
    out[f"{prefix}_median_rank"] = float(np.median(first))
    out[f"{prefix}_map"] = float(np.mean(ap))
    return out


def retrieval_metrics(
    image_vecs: np.ndarray, text_vecs: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = KS
) -> dict[str, float]:
    """Metrics for unit vectors and the boolean (texts, images) matrix of which pairs belong together.

    Every text and every image needs at least one positive. Keys: ``t2i_r{k}``, ``i2t_r{k}``,
    ``t2i_median_rank``, ``i2t_median_rank``, ``t2i_map``, ``i2t_map``.
    """
    relevant = np.asarray(relevant, bool)
    if not (relevant.any(axis=0).all() and relevant.any(axis=1).all()):
        raise ValueError("every image and every text needs at least one positive")
    # float64 products: the same vector scores the same against every query, whatever BLAS does
    sims = np.asarray(text_vecs, np.float64) @ np.asarray(image_vecs, np.float64).T
    t2i = _direction(sims, relevant, "t2i", ks)
    i2t = _direction(sims.T, relevant.T, "i2t", ks)
    ordered = [f"t2i_r{k}" for k in ks] + [f"i2t_r{k}" for k in ks]
    ordered += ["t2i_median_rank", "i2t_median_rank", "t2i_map", "i2t_map"]
    both = {**t2i, **i2t}
    return {k: both[k] for k in ordered}


def recall_at_k(
    image_vecs: np.ndarray, text_vecs: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = KS
) -> dict[str, float]:
    """Only the Recall@K values of `retrieval_metrics` (the fine-tuning report)."""
    m = retrieval_metrics(image_vecs, text_vecs, relevant, ks)
    return {f"{d}_r{k}": m[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in ks}


def mean_recall(metrics: Mapping[str, float]) -> float:
    """The model-selection score: the mean of the six Recall@1/5/10 values (both directions)."""
    return float(np.mean([metrics[k] for k in KEYS]))


def group_pairs(pairs: Sequence[Pair]) -> tuple[list[str], list[str], np.ndarray]:
    """(unique image paths, unique captions, both in first-seen order; relevance (texts, images))."""
    images: dict[str, int] = {}
    texts: dict[str, int] = {}
    links = [
        (texts.setdefault(p.caption, len(texts)), images.setdefault(p.image, len(images))) for p in pairs
    ]
    relevant = np.zeros((len(texts), len(images)), bool)
    for t, i in links:
        relevant[t, i] = True
    return list(images), list(texts), relevant
