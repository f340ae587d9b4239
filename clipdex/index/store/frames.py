"""Video frames in ``items`` (source ``video``): a video's items by path, and what a frame is.

A kept frame of a video is an image item whose path is the video's and whose ``t``/``t_end``
(schema 8) are the span of seconds it stands for; all of a video's frames share its file facts and
content hash, so a video is compared, moved and replaced as one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from clipdex.index.store.batches import chunks
from clipdex.index.store.rows import VideoRecord
from clipdex.index.store.scope import rows_at

if TYPE_CHECKING:
    from clipdex.index.store.database import Store


class FramesTable:
    """Reads of the video frames among the items."""

    def __init__(self, store: Store):
        self._store = store

    def video_files(
        self, paths: Sequence[bytes] | None = None, folders: Sequence[bytes] = ()
    ) -> dict[bytes, VideoRecord]:
        """Every indexed video, by path: its frame items (ascending id) and its file facts. With
        ``paths``: only those paths and the videos under ``folders`` (a watch batch's scope)."""
        select = "SELECT path, id, mtime_ns, size, content_hash FROM items WHERE source = 'video' AND"
        if paths is None:
            rows = self._store.conn.execute(f"{select} path IS NOT NULL ORDER BY path, id")
        else:  # a path both listed and under a folder comes twice: once each
            found = set(rows_at(self._store.conn, select, paths, folders))
            rows = sorted(found, key=lambda r: (bytes(r[0]), r[1]))
        out: dict[bytes, VideoRecord] = {}
        for p, i, m, size, h in rows:
            path = bytes(p)
            had = out.get(path)
            out[path] = VideoRecord((*had.ids, i) if had else (i,), m, size, h)
        return out

    def video_paths(self, ids: Sequence[int]) -> dict[int, bytes]:
        """id -> video path for those of ``ids`` that are video frames."""
        out: dict[int, bytes] = {}
        for chunk in chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            rows = self._store.conn.execute(
                f"SELECT id, path FROM items WHERE source = 'video' AND id IN ({marks})", chunk
            )
            out.update((i, bytes(p)) for i, p in rows)
        return out

    def frame_times(self, ids: Sequence[int]) -> dict[int, float]:
        """id -> t of those of ``ids`` that are video frames (for re-embedding from the file)."""
        out: dict[int, float] = {}
        if not self._store.has_columns("items", "t"):
            return out
        for chunk in chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            rows = self._store.conn.execute(
                f"SELECT id, t FROM items WHERE source = 'video' AND id IN ({marks})", chunk
            )
            out.update((i, t) for i, t in rows)
        return out
