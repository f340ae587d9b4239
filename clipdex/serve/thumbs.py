"""Thumbnails for `clipdex serve`: JPEGs, longest side <= 256 px, EXIF orientation applied.

A cache, never a source of truth: files are keyed by item id + the file's current mtime and size (a
changed file gets a new thumbnail, and the key doubles as the ETag), written atomically, and the
oldest are dropped when the folder grows past its budget. It lives in ``LIBRARY/thumbnails/`` when
the library is writable, else in the user cache dir, so read-only libraries get thumbnails too.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from pathlib import Path

from clipdex.errors import DecodeError
from clipdex.library import Library

MAX_SIDE = 256
DEFAULT_BUDGET = 512 << 20


def cache_folder(library: Path) -> Path:
    """``LIBRARY/thumbnails`` when writable, else ``user_cache_dir("clipdex")/thumbnails/<id>``."""
    inside = library / "thumbnails"
    try:
        inside.mkdir(exist_ok=True)
        if os.access(inside, os.W_OK):
            return inside
    except OSError:
        pass
    from platformdirs import user_cache_dir

    library_id = hashlib.sha256(os.fsencode(library.absolute())).hexdigest()[:16]
    return Path(user_cache_dir("clipdex")) / "thumbnails" / library_id


def make_thumbnail(path: bytes | str, t: float | None = None) -> bytes:
    """JPEG bytes of the image at ``path`` (a video's: its frame at ``t`` s), longest side <=
    MAX_SIDE (DecodeError if unreadable).

    Decoded by the indexing decoder: same pixel (bomb) limit, EXIF orientation, alpha over white;
    large JPEGs decode at reduced scale first. A video frame: its display rotation applied.
    """
    if t is not None:
        img = Library.video_frame(path, t, short_side=MAX_SIDE)
    else:
        img = Library.open_image(path, draft_to=(MAX_SIDE, MAX_SIDE))
    img.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue()


class ThumbCache:
    """Thumbnails on disk under ``folder``, at most about ``budget`` bytes in all."""

    def __init__(self, folder: Path, budget: int = DEFAULT_BUDGET):
        self.folder = folder
        self.budget = budget
        self._lock = threading.Lock()
        self._total: int | None = None  # measured on first write

    @staticmethod
    def key(item_id: int, st: os.stat_result) -> str:
        return f"{item_id}-{st.st_mtime_ns}-{st.st_size}"

    def get(self, item_id: int, path: bytes, st: os.stat_result, t: float | None = None) -> bytes:
        """The thumbnail of ``path`` (whose current stat is ``st``; a video's frame at ``t``), from
        the cache or made now."""
        file = self.folder / f"{self.key(item_id, st)}.jpg"
        try:
            return file.read_bytes()
        except OSError:
            pass
        data = make_thumbnail(path, t)
        self._store(file, data)
        return data

    def _store(self, file: Path, data: bytes) -> None:
        try:  # a cache: failing to write only costs the next request a re-make
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".thumb.", dir=self.folder)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, file)
        except OSError:
            return
        with self._lock:
            if self._total is None:
                self._total = sum(size for _, size, _ in _files(self.folder))
            else:
                self._total += len(data)
            if self._total > self.budget:
                self._evict()

    def _evict(self) -> None:
        """Drop the oldest thumbnails until the folder is at 90% of its budget."""
        entries = sorted(_files(self.folder))
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.budget * 0.9:
                break
            try:
                os.unlink(path)
                total -= size
            except OSError:
                pass
        self._total = total


def _files(folder: Path) -> list[tuple[int, int, str]]:
    """(mtime_ns, size, path) of each file in ``folder``. A file may vanish between the listing
    and its stat (another request's temporary file renamed, another server's eviction): skipped."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for e in entries:
        try:
            if e.is_file():
                st = e.stat()
                found.append((st.st_mtime_ns, st.st_size, e.path))
        except OSError:
            continue
    return found


__all__ = ["DecodeError", "MAX_SIDE", "ThumbCache", "cache_folder", "make_thumbnail"]
