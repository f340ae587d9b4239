"""One video of `clipdex embed` → its kept frames, preprocessed, then the facts of its rows.

The decoding is `index`'s own (``VideoReader.frames``: a frame every ``interval`` seconds, the
first always, scaled by libswscale to the model's input size, rotation applied), one frame at a
time: a long video costs time, never memory. Videos are read from local (or mounted) files only.
A video that cannot be decoded raises ``LoadError`` with `index`'s one-line reason -- at the end
too, for a truncated file, so a caller keeps no half video.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from clipdex.retrieval.video import DEFAULT_INTERVAL, VideoError, VideoReader
from clipdex.scale.load import LoadError, check_name
from clipdex.scale.sources import Entry, is_url


@dataclass(slots=True)
class VideoFacts:
    """What a video's metadata rows say besides their span: the file and the shown size."""

    size: int
    mtime: float
    width: int
    height: int
    duration: float | None  # declared by the container
    end: float  # where the decode ended (s)


class VideoLoad:
    """The frames of one video file, decoded as `index` decodes them (raises LoadError)."""

    def __init__(
        self, entry: Entry, preprocess: Callable[[Any], Any], short_side: int,
        interval: float = DEFAULT_INTERVAL, on_progress: Callable[[float, float], None] | None = None,
    ):  # fmt: skip
        check_name(entry)
        if is_url(entry.key):
            raise LoadError("videos are embedded from local or mounted files, not URLs")
        self.preprocess, self.short_side, self.interval = preprocess, short_side, interval
        self.on_progress = on_progress
        path = os.fsencode(entry.key)
        try:
            st = os.stat(path)
            self._reader = VideoReader(path)
        except FileNotFoundError as e:
            raise LoadError("file not found") from e
        except OSError as e:
            raise LoadError(f"cannot read file ({e.strerror or e})") from e
        except VideoError as e:
            raise LoadError(str(e)) from None
        self._stat = (st.st_size, st.st_mtime_ns / 1e9)
        self._done = False

    def frames(self) -> Iterator[tuple[float, Any]]:
        """``(t, preprocessed pixels)`` of each kept frame, in order; closes the file at the end."""
        reader = self._reader
        try:
            with reader:
                for frame in reader.frames(self.interval, self.short_side, self.on_progress):
                    yield frame.t, self.preprocess(frame.picture)
        except VideoError as e:
            raise LoadError(str(e)) from None
        self._done = True

    def facts(self) -> VideoFacts:
        """The rows' facts, once `frames` has been read to its end."""
        if not self._done:
            raise RuntimeError("VideoLoad.facts() before the frames were all read")
        r = self._reader
        return VideoFacts(*self._stat, *r.shown_size, r.info.duration, r.end)
