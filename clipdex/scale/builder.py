"""One shard's rows as they come in (any order, retries included) until the shard is complete.

A picture is one row. A video is a row per span: its frames come in one by one (``put_frame``),
its end says how many there were (``end_video``); once all are in, consecutive alike frames are
merged into spans exactly as `index` merges them (``clipdex.retrieval.spans``). A failure is
final: frames of a failed video that come later are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from clipdex.inputs.paths import display_path
from clipdex.retrieval.spans import Span, close_spans, merge_spans
from clipdex.scale.load import Loaded
from clipdex.scale.load_video import VideoFacts
from clipdex.scale.shards import META_COLUMNS, ShardDir

if TYPE_CHECKING:
    from clipdex.scale.job import Shard


@dataclass(slots=True)
class VideoDone:
    """A video whose frames are all in: its facts and its spans (one metadata row each)."""

    facts: VideoFacts
    spans: list[Span]


@dataclass
class ShardBuilder:
    """Collects one shard's rows; each input position ends as metadata, a video or an error."""

    shard: Shard
    dim: int
    vectors: np.ndarray = field(init=False)  # the pictures' vectors, by position
    rows: dict[int, Loaded | VideoDone | str] = field(default_factory=dict)  # finished positions
    _frames: dict[int, dict[int, tuple[float, np.ndarray]]] = field(default_factory=dict)
    _ends: dict[int, tuple[int, VideoFacts]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = np.zeros((len(self.shard.entries), self.dim), np.float32)

    def put(self, pos: int, vector: np.ndarray, loaded: Loaded) -> bool:
        """A picture's vector; True when this finished the position."""
        if pos in self.rows:
            return False
        self.vectors[pos] = vector
        self.rows[pos] = loaded
        return True

    def fail(self, pos: int, error: str) -> bool:
        """The position failed (a video's frames so far are dropped); True when newly finished."""
        if pos in self.rows:
            return False
        self._frames.pop(pos, None)
        self._ends.pop(pos, None)
        self.rows[pos] = error
        return True

    def put_frame(self, pos: int, frame: int, t: float, vector: np.ndarray) -> bool:
        """Frame number ``frame`` (from 0) of the video at ``pos``; True when it finished the video."""
        if pos in self.rows:
            return False
        self._frames.setdefault(pos, {})[frame] = (t, np.asarray(vector, np.float32))
        return self._finish_video(pos)

    def end_video(self, pos: int, count: int, facts: VideoFacts) -> bool:
        """The video at ``pos`` was decoded to its end, ``count`` frames kept; True when finished."""
        if pos in self.rows:
            return False
        self._ends[pos] = (count, facts)
        return self._finish_video(pos)

    def _finish_video(self, pos: int) -> bool:
        count, facts = self._ends.get(pos, (None, None))
        frames = self._frames.get(pos, {})
        if count is None or len(frames) < count:
            return False
        ordered = [frames[i] for i in range(count)]
        spans: list[Span] = []
        merge_spans(spans, [t for t, _ in ordered], np.stack([v for _, v in ordered]))
        close_spans(spans, facts.duration, facts.end)
        del self._frames[pos], self._ends[pos]
        self.rows[pos] = VideoDone(facts, spans)
        return True

    @property
    def complete(self) -> bool:
        return len(self.rows) == len(self.shard.entries)

    def write(self, out: ShardDir) -> tuple[int, int, int]:
        """Write the shard (rows in listing order, a video's spans in time order); returns
        (rows embedded, files failed, rows that are video frames)."""
        meta: dict[str, list] = {k: [] for k in META_COLUMNS}
        pieces: list[np.ndarray] = []
        failed: list[tuple[str, str]] = []
        frames = 0
        for p, entry in enumerate(self.shard.entries):
            row = self.rows[p]
            if isinstance(row, str):
                failed.append((display_path(entry.key), row))
                continue
            if isinstance(row, Loaded):
                values = [(row.size, row.mtime, row.width, row.height, row.caption, None, None)]
                pieces.append(self.vectors[p : p + 1])
            else:
                f = row.facts
                values = [(f.size, f.mtime, f.width, f.height, None, s.t, s.t_end) for s in row.spans]
                pieces.append(np.stack([s.vector for s in row.spans]))
                frames += len(row.spans)
            for v in values:
                for k, x in zip(META_COLUMNS, (entry.key, *v)):
                    meta[k].append(x)
        vectors = np.concatenate(pieces) if pieces else np.zeros((0, self.dim), np.float32)
        out.write_shard(self.shard.index, vectors, meta, failed)
        return len(meta["path"]), len(failed), frames
