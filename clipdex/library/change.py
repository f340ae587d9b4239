"""What one committed batch of an `index` run changed: the FAISS indexes follow it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Change:
    """The vectors one committed batch changed; the FAISS indexes follow it.

    Apply ``removed`` first, then ``added``: an update in place (same id) appears in both.
    """

    added: dict[str, tuple[list[int], np.ndarray]] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)

    def add(self, kind: str, ids: list[int], vecs: np.ndarray) -> None:
        if ids:
            self.added[kind] = (ids, vecs)
