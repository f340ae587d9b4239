"""The brute-force retrieval metrics the metrics and eval tests check clipdex against."""

from __future__ import annotations

import numpy as np


def brute_force(img: np.ndarray, txt: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """Sort every candidate list in full; at equal score a non-positive goes first (pessimistic)."""

    def direction(scores: np.ndarray, rel: np.ndarray, prefix: str) -> dict[str, float]:
        firsts, aps = [], []
        for s, r in zip(scores, rel, strict=True):
            order = np.lexsort((r, -np.round(s, 9)))  # by score, then non-positive (False) first
            hits = np.flatnonzero(r[order]) + 1  # 1-based ranks of the positives
            firsts.append(hits[0])
            aps.append(np.mean([(j + 1) / rank for j, rank in enumerate(hits)]))
        firsts = np.array(firsts)
        out = {f"{prefix}_r{k}": float(np.mean(firsts <= k)) for k in (1, 5, 10)}
        out[f"{prefix}_median_rank"] = float(np.median(firsts))
        out[f"{prefix}_map"] = float(np.mean(aps))
        return out

    sims = txt.astype(np.float64) @ img.astype(np.float64).T
    return {**direction(sims, relevant, "t2i"), **direction(sims.T, relevant.T, "i2t")}
