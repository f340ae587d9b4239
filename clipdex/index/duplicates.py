"""Near-duplicate groups: batch k-NN over stored image vectors, edges above a threshold,
connected components (union-find), each group best quality first.

Pure numpy/faiss over the store (the k-NN: clipdex.index.faiss.neighbours); the Library adds what
needs the files (sizes from headers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from clipdex.index.faiss.neighbours import neighbour_pairs
from clipdex.index.filters import Filter
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE
from clipdex.results import DuplicateItem


def components(n: int, pairs: np.ndarray) -> list[list[int]]:
    """Connected components with at least two members (union-find with path halving)."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for a in np.unique(pairs).tolist():
        groups.setdefault(find(a), []).append(a)
    return [sorted(g) for g in groups.values()]


def find_duplicates(
    store: Store,
    threshold: float = 0.95,
    under: Sequence[str | bytes | os.PathLike] = (),
    dims_of: Callable[[bytes], tuple[int, int] | None] | None = None,
) -> list[list[DuplicateItem]]:
    """Groups of near-identical images, largest group first; in each, best quality first (most
    pixels, then largest file, then lowest id), scores are exact cosines to that first image.

    ``dims_of(path)`` supplies (width, height) for images stored without them (older libraries).
    """
    ids, vecs = store.vectors.all(IMAGE)
    if under:
        keep = np.isin(ids, store.selection.matching_ids(IMAGE, Filter(under=under)))
        ids, vecs = ids[keep], vecs[keep]
    pairs = neighbour_pairs(vecs, threshold)
    videos = store.frames.video_paths(ids[np.unique(pairs)].tolist()) if len(pairs) else {}
    if videos:  # moments of one video that only repeat each other are no duplicates
        of = [videos.get(int(i)) for i in ids]
        pairs = pairs[[of[a] is None or of[a] != of[b] for a, b in pairs.tolist()]].reshape(-1, 2)
    groups = components(len(ids), pairs)
    if not groups:
        return []
    members = [int(ids[r]) for g in groups for r in g]
    info = store.items.photo_rows(members)
    times = store.frames.frame_times(members)
    out = []
    for g in groups:
        rows = []
        for r in g:
            path, size, w, h = info[int(ids[r])]
            if (w is None or h is None) and path is not None and dims_of is not None:
                w, h = dims_of(path) or (None, None)
            if size is None and path is not None:
                try:
                    size = os.stat(path).st_size
                except OSError:
                    size = None
            rows.append((r, path, size, w, h))
        rows.sort(key=lambda t: (-((t[3] or 0) * (t[4] or 0)), -(t[2] or 0), int(ids[t[0]])))
        head = vecs[rows[0][0]].astype(np.float64)
        out.append([
            DuplicateItem(int(ids[r]), os.fsdecode(p) if p is not None else None,
                          float((vecs[r].astype(np.float64) * head).sum()), w, h, size, raw_path=p,
                          t=times.get(int(ids[r])))
            for r, p, size, w, h in rows
        ])  # fmt: skip
    out.sort(key=lambda g: (-len(g), g[0].id))
    return out
