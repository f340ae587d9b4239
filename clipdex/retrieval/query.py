"""Composed queries: texts and images to look for, and texts and images to steer away from.

The query vector is the normalised weighted sum of the positive terms' unit vectors minus the
negative terms' (the CLIP arithmetic rclip uses). Terms are ordered text, image, not_text,
not_image (each a list); ``weights`` is one non-negative number per term in that order, or a
mapping from those four names to one number (every term of that name) or a list (one per term).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clipdex.errors import QueryError

ROLES = ("text", "image", "not_text", "not_image")

Weights = Sequence[float] | Mapping[str, float | Sequence[float]] | None


def as_list(value: object) -> list:
    """None -> [], one term -> [term], a list/tuple of terms -> a list."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, os.PathLike)):
        return [value]
    return list(value)  # type: ignore[call-overload]


@dataclass
class Terms:
    """The terms of one query, by role; each role a list."""

    text: list[str]
    image: list
    not_text: list[str]
    not_image: list

    @classmethod
    def of(cls, text: object = None, image: object = None, not_text: object = None,
           not_image: object = None) -> Terms:  # fmt: skip
        terms = cls(as_list(text), as_list(image), as_list(not_text), as_list(not_image))
        for role in ("text", "not_text"):
            for t in getattr(terms, role):
                if not isinstance(t, str) or not t.strip():
                    raise ValueError(f"{role} terms must be non-empty strings, not {t!r}")
        return terms

    @property
    def positives(self) -> int:
        return len(self.text) + len(self.image)

    @property
    def count(self) -> int:
        return sum(len(getattr(self, r)) for r in ROLES)

    def signs(self) -> np.ndarray:
        """+1 for each positive term, -1 for each negative one, in ROLES order."""
        return np.array([1.0] * self.positives + [-1.0] * (len(self.not_text) + len(self.not_image)))

    def weights(self, weights: Weights) -> np.ndarray:
        """One weight per term (ROLES order) from the API's ``weights=`` (default: all 1)."""
        if weights is None:
            w = np.ones(self.count)
        elif isinstance(weights, Mapping):
            unknown = set(weights) - set(ROLES)
            if unknown:
                raise ValueError(f"unknown weight keys {sorted(unknown)}; use {', '.join(ROLES)}")
            parts = []
            for role in ROLES:
                n = len(getattr(self, role))
                given = weights.get(role, 1.0)
                part = [float(given)] * n if np.isscalar(given) else [float(x) for x in given]  # type: ignore[union-attr]
                if len(part) != n:
                    raise ValueError(f"{len(part)} weights for {n} {role} terms")
                parts += part
            w = np.array(parts)
        else:
            w = np.asarray([float(x) for x in weights])
            if len(w) != self.count:
                order = ", ".join(ROLES)
                raise ValueError(f"{len(w)} weights for {self.count} terms (in the order {order})")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("weights must be finite and non-negative (negative terms are subtracted)")
        return w


def compose(vectors: np.ndarray, signs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """normalise(sum of w * v over positive terms - sum of w * v over negative terms).

    One positive term of weight 1 and nothing else is returned unchanged (already a unit vector).
    """
    vectors = np.asarray(vectors, np.float32)
    if len(vectors) == 1 and signs[0] > 0 and weights[0] == 1:
        return vectors[0]
    q = ((signs * weights)[:, None] * vectors.astype(np.float64)).sum(axis=0)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-6:
        raise QueryError("the query's terms cancel out (their weighted sum is zero)")
    return (q / norm).astype(np.float32)
