"""Imported video frames: a video's frame rows compared with its stored frames as one.

A video (all rows with its path and a ``t``) is new (its frames go in as image items of source
``video``), unchanged (the same spans and vectors as stored), or replaced whole: its old frames go
and the new ones come in, as `index` does for a changed video. Picture rows are `KeyedMerge`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clipdex.index.store.batches import chunks
from clipdex.index.store.items import VIDEO
from clipdex.index.store.merge import FLOAT16_TOLERANCE
from clipdex.kinds import IMAGE

if TYPE_CHECKING:
    from clipdex.index.store.database import Store
    from clipdex.index.store.items import ItemsTable
    from clipdex.index.store.vector_files import VectorFiles


@dataclass(frozen=True, slots=True)
class FramesMerged:
    """What `FrameMerge.videos` did with one batch of videos (rows index the batch's frames).

    Counts are of frames: a video's frames are all imported, all unchanged or all updated."""

    new_ids: np.ndarray  # the inserted frames' ids, in row order
    new_rows: np.ndarray
    removed_images: list[int]  # frames of replaced videos
    removed_texts: list[int]  # texts that were linked to them (deleted with them)
    imported: int
    updated: int
    unchanged: int


class FrameMerge:
    """Upserts of whole videos' frames into ``items`` (through `ItemsTable`'s logged writes)."""

    def __init__(self, store: Store, items: ItemsTable, files: VectorFiles):
        self._store = store
        self._items = items
        self._files = files

    def videos(
        self, paths: Sequence[bytes], starts: np.ndarray, spans: np.ndarray, vectors: np.ndarray,
        located: tuple[int, np.ndarray] | None = None,
    ) -> FramesMerged:  # fmt: skip
        """Merge videos: video ``k`` is ``paths[k]`` with frames ``starts[k]`` up to
        ``starts[k + 1]`` (t ascending, no t repeated) of ``spans`` ((m, 2) t, t_end) and
        ``vectors`` ((m, D) float32, unit). ``located`` as in `KeyedMerge.keyed`: the frames'
        vectors already sit in that vector file (float16: equal within FLOAT16_TOLERANCE)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        bounds = [*np.asarray(starts, np.int64).tolist(), len(vectors)]
        new: list[int] = []
        replaced: list[int] = []
        counts = {"imported": 0, "updated": 0, "unchanged": 0}
        with self._store.transaction():
            stored = self._stored(paths)
            for k, path in enumerate(paths):
                lo, hi = bounds[k], bounds[k + 1]
                old = stored.get(path)
                if old is None:
                    counts["imported"] += hi - lo
                elif self._same(old, spans[lo:hi], vectors[lo:hi]):
                    counts["unchanged"] += hi - lo
                    continue
                else:
                    counts["updated"] += hi - lo
                    replaced += [r[0] for r in old]
                new += range(lo, hi)
            gone = self._items.delete(replaced)
            rows = np.array(new, np.int64)
            ids = np.empty(0, np.int64)
            if new:
                video_of = np.searchsorted(np.asarray(bounds[1:]), rows, side="right")
                ids = np.array(self._items.insert(
                    IMAGE, VIDEO, vectors[rows], paths=[paths[k] for k in video_of.tolist()],
                    spans=[(float(a), float(b)) for a, b in spans[rows].tolist()],
                    located=None if located is None else (located[0], np.asarray(located[1])[rows]),
                ), np.int64)  # fmt: skip
        asked = set(replaced)
        texts = [i for i in gone if i not in asked]
        return FramesMerged(ids, rows, replaced, texts, **counts)

    def _stored(self, paths: Sequence[bytes]) -> dict[bytes, list[tuple]]:
        """path -> its stored frames (id, t, t_end, blob, vfile, vrow), by t then id."""
        out: dict[bytes, list[tuple]] = {}
        cols = "vector, vfile, vrow" if self._files.available() else "vector, NULL, NULL"
        for chunk in chunks(list(dict.fromkeys(paths)), 500):
            marks = ",".join("?" * len(chunk))
            rows = self._store.conn.execute(
                f"SELECT path, id, t, t_end, {cols} FROM items WHERE source = '{VIDEO}' AND kind = ?"
                f" AND path IN ({marks}) ORDER BY path, t, id",
                (IMAGE, *chunk),
            )
            for p, *rest in rows:
                out.setdefault(bytes(p), []).append(tuple(rest))
        return out

    def _same(self, old: list[tuple], spans: np.ndarray, vectors: np.ndarray) -> bool:
        """Whether stored frames ``old`` are these spans with these vectors (float16 rows of a
        vector file within FLOAT16_TOLERANCE, blobs exactly)."""
        if len(old) != len(spans):
            return False
        if any(t is None or e is None for _, t, e, *_ in old):
            return False
        if not np.array_equal(np.array([(t, e) for _, t, e, *_ in old], np.float64), spans):
            return False
        in_files = []
        for n, (_, _, _, blob, vfile, vrow) in enumerate(old):
            if blob is not None:
                if blob != vectors[n].tobytes():
                    return False
            elif vfile is not None:
                in_files.append((n, vfile, vrow))
            else:  # no stored vector at all
                return False
        if in_files:
            at = np.array(in_files, np.int64)
            diff = np.abs(self._files.read(at[:, 1], at[:, 2]) - vectors[at[:, 0]]).max(axis=1)
            return bool((diff <= FLOAT16_TOLERANCE).all())
        return True
