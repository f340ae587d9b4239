"""Frames out of video files (PyAV): sequential, seek-free decoding of one frame every few seconds.

A video is read once from start to end (seeking costs a decode from the previous keyframe anyway,
and many files seek badly); only the frames that are kept are converted, by libswscale, straight
to a small RGB picture (the shortest side the model's input size), so a 4K video costs what a
thumbnail does. Frames come out of a generator, one at a time: memory is bounded by the decoder's
own few frames whatever the video's length. The display rotation (a phone's portrait video) is
applied; the creation time in the container is read for date filters.

Content is probed, never trusted by name: a PNG renamed .mp4, a text file, an audio-only file, a
truncated file and an unknown codec each raise `VideoError` with a one-line reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clipdex.errors import ClipdexError, DecodeError
from clipdex.results import clock

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
DEFAULT_INTERVAL = 2.0
# Decoded frames a reader thread may hold for the encoder (`index` and `embed`): with one batch
# being encoded, the memory bound of a video, whatever its length.
FRAMES_AHEAD = 8
# Containers a video file may really be (FFmpeg's demuxer names); anything else under a video
# extension (an image pipe, an MP3) is not taken for a video.
_CONTAINERS = ("mov", "mp4", "matroska", "webm", "avi")
# A decode that ends this much before the duration the container declares is a truncated file.
_SHORT_S, _SHORT_SHARE = 1.0, 0.05
_ROTATE = {90: "ROTATE_90", 180: "ROTATE_180", 270: "ROTATE_270"}  # counter-clockwise, as PIL


class VideoError(DecodeError):
    """A video that cannot be indexed; the message is the one-line reason."""


def need_av() -> Any:
    """The ``av`` module (PyAV), or a one-line error saying how to install it."""
    try:
        import av
    except ImportError:
        raise ClipdexError(
            "videos need PyAV (pip install av), which clipdex depends on; or pass --no-video to skip them"
        ) from None
    return av


def is_video_name(name: str | bytes) -> bool:
    ext = os.path.splitext(os.fsdecode(name))[1].lower()
    return ext in VIDEO_EXTENSIONS


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the container says: duration (s, None when unknown), the size as shown (rotation
    applied), frame rate, creation time (unix s, None when absent), codec and rotation."""

    duration: float | None
    width: int
    height: int
    fps: float | None
    created_at: float | None
    codec: str
    rotation: int


@dataclass(frozen=True, slots=True)
class Frame:
    """One kept frame: its time (s from the start) and the picture (PIL RGB, rotation applied)."""

    t: float
    picture: Any


def _sniff(path: str | bytes) -> str:
    """What the first bytes say a file is, for the reason of a refusal."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return e.strerror or str(e)
    if head[4:8] == b"ftyp":
        return "a damaged or truncated MP4/MOV (no readable index)"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "a damaged or truncated Matroska/WebM file"
    if head.startswith(b"RIFF"):
        return "a damaged or truncated AVI file"
    if head.startswith((b"\xff\xd8", b"\x89PNG", b"GIF8")):
        return "not a video: the content is an image"
    return "not a video (unrecognised content)"


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        text = value.strip().replace("Z", "+00:00")
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.timestamp() if when.year > 1970 else None  # 1970/1904 epochs: "not set"


class VideoReader:
    """An open video file; use as a context manager. Raises `VideoError` on bad content."""

    def __init__(self, path: str | bytes | os.PathLike):
        av = need_av()
        self.path = os.fsencode(path)
        try:
            size = os.path.getsize(self.path)
        except OSError as e:
            raise VideoError(e.strerror or str(e)) from None
        if size == 0:
            raise VideoError("empty file (0 bytes)")
        try:
            self._c = av.open(os.fsdecode(self.path), metadata_errors="ignore")
        except av.FFmpegError:
            raise VideoError(_sniff(self.path)) from None
        self.end = 0.0  # where the decode ended (s), once `frames` is exhausted
        try:
            self.info = self._probe()
        except BaseException:
            self._c.close()
            raise
        # (width, height) as shown: the container's word until a decoded frame says it for sure
        self.shown_size: tuple[int, int] = (self.info.width, self.info.height)

    def _probe(self) -> VideoInfo:
        c = self._c
        fmt = c.format.name
        if not any(name in _CONTAINERS for name in fmt.split(",")):
            what = fmt.removesuffix("_pipe").upper() if fmt.endswith("_pipe") else fmt
            raise VideoError(f"not a video: the content is {what}")
        if not c.streams.video:
            kind = "audio only" if c.streams.audio else "no streams"
            raise VideoError(f"no video stream ({kind})")
        s = c.streams.video[0]
        if s.codec_context is None or not s.codec_context.name:
            raise VideoError("unsupported video codec (no decoder for it)")
        s.thread_type = "AUTO"
        dur = None
        if s.duration is not None and s.time_base:
            dur = float(s.duration * s.time_base)
        elif c.duration is not None:
            dur = c.duration / 1_000_000
        rate = s.average_rate or s.guessed_rate
        created = _parse_time(c.metadata.get("creation_time") or s.metadata.get("creation_time"))
        w, h = s.codec_context.width, s.codec_context.height
        rotation = _rotation_of(s)
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(dur, w, h, float(rate) if rate else None, created, s.codec_context.name, rotation)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._c.close()

    def frames(
        self, interval: float = DEFAULT_INTERVAL, short_side: int = 224,
        on_progress: Callable[[float, float], None] | None = None, at: Sequence[float] | None = None,
    ) -> Iterator[Frame]:  # fmt: skip
        """The first frame, then the first frame at or after each multiple of ``interval`` s (or
        the frames nearest at or after the times ``at``), scaled so the shortest side is at most
        ``short_side``. ``on_progress(t, total)`` follows the decode (``total``: the declared
        duration, or ``t`` past it). A decode error, or a decode that
        stops well short of the declared duration (a truncated file), raises `VideoError` at the
        end, so a caller keeps no half video."""
        av = need_av()
        s = self._c.streams.video[0]
        start = s.start_time or 0
        tb = s.time_base
        wanted = sorted(at) if at is not None else None
        due, n, last, kept = 0.0, 0, None, 0
        step = 1 / self.info.fps if self.info.fps else 0.04
        try:
            for frame in self._c.decode(s):
                t = float((frame.pts - start) * tb) if frame.pts is not None and tb else n * step
                n += 1
                last = t
                if on_progress is not None and n % 16 == 0:
                    on_progress(t, max(self.info.duration or t, t))
                if wanted is not None:
                    if kept >= len(wanted) or t + step / 2 < wanted[kept]:
                        continue
                    while kept < len(wanted) and t + step / 2 >= wanted[kept]:
                        kept += 1
                elif kept and t + step / 2 < due:
                    continue
                else:
                    kept += 1
                    due = (int((t + step / 2) / interval) + 1) * interval
                yield Frame(round(max(t, 0.0), 3), self._picture(frame, short_side))
        except av.FFmpegError as e:
            raise VideoError(f"damaged video at {clock(last or 0)}: {e.strerror or e}") from None
        if n == 0:
            raise VideoError("no frame could be decoded (damaged or truncated)")
        self.end = round((last or 0.0) + step, 3)
        dur = self.info.duration
        if dur and last is not None and last + step < dur - max(_SHORT_S, _SHORT_SHARE * dur):
            raise VideoError(f"truncated: decodes to {last + step:.1f} s of {dur:.1f} s")

    def seek_before(self, t: float) -> None:
        """Jump to the keyframe at or before ``t`` (for one frame: a thumbnail); best effort."""
        s = self._c.streams.video[0]
        if t <= 0 or not s.time_base:
            return
        try:
            self._c.seek(int(t / s.time_base) + (s.start_time or 0), stream=s, backward=True)
        except Exception:  # a file that cannot seek is decoded from the start
            self._c.seek(0)

    def _picture(self, frame: Any, short_side: int) -> Any:
        from PIL import Image

        w, h = frame.width, frame.height
        scale = min(1.0, short_side / max(1, min(w, h)))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_image()
        rotation = _rotation_of(frame) if hasattr(frame, "rotation") else self.info.rotation
        self.shown_size = (h, w) if rotation in (90, 270) else (w, h)
        if rotation in _ROTATE:
            img = img.transpose(getattr(Image.Transpose, _ROTATE[rotation]))
        return img


def _rotation_of(obj: Any) -> int:
    """Counter-clockwise display rotation in degrees (0, 90, 180, 270) of a frame or a stream:
    its display matrix, else the old ``rotate`` tag (clockwise)."""
    value = getattr(obj, "rotation", None)
    if value is None:
        tag = getattr(obj, "metadata", {}).get("rotate")
        value = -int(tag) if tag and tag.lstrip("-").isdigit() else 0
    return int(round(value / 90)) * 90 % 360


def frame_at(path: str | bytes | os.PathLike, t: float, short_side: int = 256) -> Any:
    """The picture of the frame shown at ``t`` s (decoded from the start: no seeking)."""
    with VideoReader(path) as reader:
        reader.seek_before(t)
        for frame in reader.frames(short_side=short_side, at=[t]):
            return frame.picture
    raise VideoError(f"no frame at {clock(t)}")
