"""Image decoding for the indexing pipeline (scan -> decode -> encode).

``open_image`` turns any file the installed Pillow can read into a fully decoded RGB image, or raises
``DecodeError`` with a one-line reason; `clipdex.retrieval.prefetch` runs it in a bounded thread
pool while keeping input order.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from clipdex.errors import DecodeError
from clipdex.retrieval import late_size

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
R = TypeVar("R")


def _env_max_pixels() -> int:
    raw = os.environ.get("CLIPDEX_MAX_PIXELS", "").strip()
    try:
        return int(raw) if raw and int(raw) > 0 else 178_956_970
    except ValueError:
        return 178_956_970


# Decompression-bomb limit (Pillow's own error threshold by default). Read at call time, so tests and
# callers may change it. Pillow's own checks stay on, armed from this limit at every open
# (late_size.arm_pillow says how); open_image also checks every image against it, at the size the
# decode will really allocate, and against the memory budget below.
MAX_PIXELS: int = _env_max_pixels()
late_size.arm_pillow(MAX_PIXELS)

# Peak bytes per decoded pixel: the decoded image (up to 4 B, RGBA), a conversion copy (4 B) and
# the RGB result (3 B), with room for the resize; measured by bench/decode_memory.py.
BYTES_PER_PIXEL = 16
MEMORY_FRACTION = 0.5  # of the memory available when the first image is decoded


def available_memory() -> int:
    """Bytes the system can still give (MemAvailable), else half of physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


class PixelBudget:
    """Pixels being decoded at once, across the decode workers of this process.

    A worker reserves an image's pixels before decoding it and gives them back when its tensor is
    made; a big image waits until enough are free, so N workers on N huge images stay within
    the budget instead of each taking its own share. An image larger than the whole budget fails.
    """

    def __init__(self, pixels: int):
        self.total = max(1, int(pixels))
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        if pixels > self.total:
            raise DecodeError(
                f"image too large for the memory available ({pixels} pixels; "
                f"{self.total} can be decoded at once)"
            )
        with self._cond:
            while self.used and self.used + pixels > self.total:
                self._cond.wait()
            self.used += pixels
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= pixels
                self._cond.notify_all()


_budget: PixelBudget | None = None
_budget_lock = threading.Lock()


def pixel_budget() -> PixelBudget:
    """The process's decode budget, sized from the memory available on first use."""
    global _budget
    with _budget_lock:
        if _budget is None:
            _budget = PixelBudget(available_memory() * MEMORY_FRACTION // BYTES_PER_PIXEL)
        return _budget


# Load every plugin now: Pillow's lazy plugin registration is not safe to race from worker threads.
Image.init()
try:  # optional `heif` extra
    from pillow_heif import register_heif_opener

    register_heif_opener()
except Exception:  # absent or broken: HEIC files are then simply "not an image"
    pass

_JPEG_FORMATS = {"JPEG", "MPO"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
# EXIF Orientation -> transpose, the same table ImageOps.exif_transpose uses.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def too_large(pixels: int, limit: int) -> DecodeError:
    return DecodeError(f"image too large: {pixels} pixels (limit {limit})")


def check_pixels(pixels: int, limit: int | None = None) -> None:
    """Refuse ``pixels`` over ``limit`` (default: MAX_PIXELS now)."""
    limit = MAX_PIXELS if limit is None else limit
    if pixels > limit:
        raise too_large(pixels, limit)


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF must not make a readable image fail
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION else 1


def _maybe_draft(img: Image.Image, draft_to: tuple[int, int] | None) -> None:
    """Decode a large JPEG at 1/2, 1/4 or 1/8 scale; the result stays >= draft_to in both sides."""
    if draft_to is None or img.format not in _JPEG_FORMATS:
        return
    want_w, want_h = draft_to
    if _orientation(img) in (5, 6, 7, 8):  # stored sideways: the target's sides swap too
        want_w, want_h = want_h, want_w
    if img.width >= 2 * want_w and img.height >= 2 * want_h:
        img.draft("RGB", (want_w, want_h))


ROWS_PIXELS = 1 << 20  # _to_8bit converts this many pixels at a time (bounded float64 temporaries)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float grey images to 8-bit 'L' without saturating them.

    Works in blocks of rows, so the float64 temporaries stay ~8 MB whatever the image size.
    """
    arr = np.asarray(img)
    if arr.ndim != 2:
        arr = arr.reshape(img.height, img.width)
    step = max(1, ROWS_PIXELS // max(1, arr.shape[1]))

    def blocks() -> Iterator[tuple[slice, np.ndarray]]:
        for start in range(0, arr.shape[0], step):
            rows = slice(start, start + step)
            yield rows, np.nan_to_num(arr[rows].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)

    lo, hi = np.inf, -np.inf
    for _, block in blocks():
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    if not np.isfinite(lo):
        lo = hi = 0.0
    transform: Callable[[np.ndarray], np.ndarray] | None
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and lo >= 0 and 255 < hi <= 65535):
        offset, transform = 0.0, _divide_by_257  # the full 16-bit range maps exactly onto 0..255
    elif img.mode == "F" and lo >= 0 and hi <= 1.0:
        offset, transform = 0.0, _times(255.0)  # float images in [0, 1]
    elif lo < 0 or hi > 255:
        # Unknown range: stretch what is there (one value alone has no range: it becomes black).
        offset, transform = lo, _times(255.0 / (hi - lo) if hi > lo else 1.0)
    else:
        offset, transform = 0.0, None
    out = np.empty(arr.shape, np.uint8)
    for rows, block in blocks():
        if offset:
            block -= offset
        if transform is not None:
            block = transform(block)
        out[rows] = np.clip(np.rint(block), 0, 255)
    return Image.fromarray(out)


def _divide_by_257(block: np.ndarray) -> np.ndarray:
    return block / 257.0  # 65535 -> 255: the 16-bit range onto the 8-bit one


def _times(scale: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda block: block * scale  # (times 1.0 changes no bit)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited over white, as a viewer shows it."""
    mode = img.mode
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return _to_8bit(img).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        # Pasting through the alpha channel onto white equals alpha_composite over opaque white,
        # with 4 bytes a pixel of copies instead of 15 (two RGBA copies and the RGB result).
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img if mode == "RGB" else img.convert("RGB")


def _reason(exc: BaseException) -> str:
    """A short, single-line reason for a failure inside Pillow or the OS."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # Pillow's late checks (or its warning raised by an "error" filter): the same reason as ours.
        pixels = late_size.bomb_pixels(exc)
        return str(too_large(pixels, MAX_PIXELS)) if pixels else "image too large"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (cannot identify format)"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    text = " ".join(str(exc).split())
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "truncated image"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read file ({exc.strerror})"
    return (
        f"corrupt image ({type(exc).__name__}: {text})" if text else f"corrupt image ({type(exc).__name__})"
    )


def _open_regular(path: str | bytes | os.PathLike) -> BinaryIO:
    """Open a regular file without blocking (a FIFO must not wait for a writer); refuse anything else."""
    fh = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")
    mode = os.fstat(fh.fileno()).st_mode
    if not stat.S_ISREG(mode):
        fh.close()
        raise DecodeError("is a directory" if stat.S_ISDIR(mode) else "not a regular file")
    return fh


def _byte_size(fh: BinaryIO) -> int:
    try:
        return os.fstat(fh.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):  # an in-memory stream
        here = fh.tell()
        size = fh.seek(0, io.SEEK_END)
        fh.seek(here)
        return size


# (taken_at, width, height): EXIF DateTimeOriginal as unix seconds (None without one) and the full
# image size after EXIF rotation (not the draft-decoded size).
PhotoInfo = tuple[float | None, int, int]
_EXIF_IFD, _DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL = 0x8769, 0x9003, 0x9011


def exif_taken_at(img: Image.Image) -> float | None:
    """EXIF DateTimeOriginal as unix seconds: with OffsetTimeOriginal when present, else local time."""
    try:
        exif = img.getexif().get_ifd(_EXIF_IFD)
        raw, offset = exif.get(_DATETIME_ORIGINAL), exif.get(_OFFSET_TIME_ORIGINAL)
        if not isinstance(raw, str):
            return None
        taken = datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
        if isinstance(offset, str) and len(offset.strip("\x00 ")) >= 6:
            off = offset.strip("\x00 ")
            sign = -1 if off[0] == "-" else 1
            delta = timedelta(hours=int(off[1:3]), minutes=int(off[4:6]))
            taken = taken.replace(tzinfo=timezone(sign * delta))
        return taken.timestamp()  # a naive datetime is local time
    except Exception:  # missing, malformed ("0000:00:00 00:00:00") or broken EXIF: no date
        return None


def photo_info(img: Image.Image, size: tuple[int, int] | None = None) -> PhotoInfo:
    """(taken_at, width, height) of an opened image; ``size`` is its size before any draft."""
    w, h = size or img.size
    if _orientation(img) in (5, 6, 7, 8):
        w, h = h, w
    return exif_taken_at(img), w, h


def image_size(src: str | bytes | os.PathLike | BinaryIO, rotated: bool = True) -> tuple[int, int] | None:
    """(width, height) from the file's header (no decoding), after EXIF rotation unless not
    ``rotated``; None if unreadable or over the pixel limit (an ICO over it is refused before
    Image.open, which decodes ICOs, gets to it)."""
    limit = MAX_PIXELS
    late_size.arm_pillow(limit)
    try:
        with nullcontext(src) if hasattr(src, "read") else _open_regular(src) as fh:
            check_pixels(late_size.opening_pixels(fh) or 0, limit)
            with Image.open(fh) as img:
                # Before a PNG's getexif() decodes it; an ICNS icon at its own header's size.
                check_pixels(max(img.width * img.height, late_size.loading_pixels(img)), limit)
                return photo_info(img)[1:] if rotated else img.size
    except Exception:
        return None


def open_image(
    path: str | bytes | os.PathLike | BinaryIO,
    draft_to: tuple[int, int] | None = None,
    on_info: Callable[[PhotoInfo], None] | None = None,
    hold: ExitStack | None = None,
) -> Image.Image:
    """Fully decode ``path`` to an RGB image with its EXIF orientation applied.

    Alpha and palette transparency are composited over white; high-bit-depth grey is scaled to 8
    bits; animated files give their first frame. ``draft_to`` lets a JPEG at least twice that size
    in both sides decode at reduced scale (never below ``draft_to``). Raises DecodeError for anything
    unreadable, including images over ``MAX_PIXELS`` or over the process's `pixel_budget`. The
    image's share of the budget is given back on return, or when ``hold`` closes (the caller
    keeps the full-size image a while longer, e.g. to preprocess it). ``on_info`` receives the
    `photo_info` (date, full size) of an image that decoded.
    """
    limit = MAX_PIXELS
    late_size.arm_pillow(limit)
    try:
        # Our own handle: bytes paths work and the file always closes. O_NONBLOCK: opening a FIFO
        # must not wait for a writer; anything but a regular file is refused before a read. A binary
        # file object (bytes fetched from a URL by `clipdex embed`) is decoded the same way.
        with nullcontext(path) if hasattr(path, "read") else _open_regular(path) as fh, ExitStack() as own:
            if _byte_size(fh) == 0:
                raise DecodeError("zero-byte file")
            # Every size is checked, and its memory reserved, before the step that allocates it:
            # an ICO decodes inside Image.open, an ICNS icon's real size is known only from its
            # own header, a drafted JPEG allocates its reduced size.
            opening = late_size.opening_pixels(fh)
            if opening is not None:
                check_pixels(opening, limit)
                (hold or own).enter_context(pixel_budget().reserve(opening))
            img = Image.open(fh)
            check_pixels(img.width * img.height, limit)
            full_size = img.size
            _maybe_draft(img, draft_to)
            if opening is None:
                pixels = late_size.loading_pixels(img)
                check_pixels(pixels, limit)
                (hold or own).enter_context(pixel_budget().reserve(pixels))
            # After the reservation: a PNG's getexif() decodes the whole image to find its EXIF.
            info = photo_info(img, full_size) if on_info is not None else None
            img.load()  # decode now, inside the try: truncation surfaces here, not in a later resize
            # A late size nobody foresaw (Pillow's own check stopped it at twice the limit).
            check_pixels(img.width * img.height, limit)
            orientation = _orientation(img)
            out = _to_rgb(img)
        if orientation != 1:
            out = out.transpose(_ORIENTATION[orientation])
        if on_info is not None and info is not None:
            on_info(info)
        return out
    except DecodeError:
        raise
    except Exception as exc:  # Pillow plugins raise nearly anything on bad data
        raise DecodeError(_reason(exc)) from exc


def load_and_preprocess(
    path: str | bytes | os.PathLike,
    preprocess: Callable[[Image.Image], torch.Tensor],
    draft_to: tuple[int, int] | None = None,
    on_info: Callable[[PhotoInfo], None] | None = None,
    on_image: Callable[[Image.Image], None] | None = None,
) -> torch.Tensor:
    """``open_image`` then the model's ``preprocess``: one unit of work for a prefetch worker
    (the full-size image's pixels stay reserved until its tensor is made). ``on_image`` sees the
    decoded picture first (in this thread), for another consumer of the same decode (OCR)."""
    with ExitStack() as hold:
        picture = open_image(path, draft_to, on_info, hold)
        if on_image is not None:
            on_image(picture)
        return preprocess(picture)
