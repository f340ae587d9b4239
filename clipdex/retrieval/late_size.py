"""The pixels a decode will really allocate, for formats that learn their size after ``Image.open``.

Most formats give their full size in the header, and ``Image.open`` reports it. A few do not:

- ICO decodes its largest entry inside ``Image.open`` (the directory says at most 256x256; the
  entry's own PNG or DIB header says the real size).
- ICNS opens at the size its icon table names and reads the icon's PNG or JPEG 2000 header, which
  may claim any size, only in ``load()``.
- A tiled TIFF decoded by libtiff allocates whole tiles, which may be larger than the image.

``opening_pixels`` and ``loading_pixels`` read those headers (no pixel data) so that clipdex
checks the limit and reserves its memory budget for the real size before anything is allocated.
Formats whose late sizes are already reported after ``Image.open`` (GIF frames larger than the
logical screen, APNG frames, which must fit the PNG's size; MPO frames and PSD layers, which
clipdex never seeks to) need nothing here: the size check after open covers them.
"""

from __future__ import annotations

import io
import re
from typing import BinaryIO

from PIL import (
    BmpImagePlugin,
    IcnsImagePlugin,
    IcoImagePlugin,
    Image,
    Jpeg2KImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)

_ICO_MAGIC = b"\0\0\1\0"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_J2K_MAGICS = (b"\xff\x4f\xff\x51", b"\x0d\x0a\x87\x0a", b"\x00\x00\x00\x0cjP  \x0d\x0a\x87\x0a")
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def arm_pillow(limit: int) -> None:
    """Set Pillow's own decompression-bomb limit from clipdex's ``limit``.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and raises above twice that, in ``Image.open`` and in
    the late checks of its plugins (ICO/ICNS entries, GIF frames, TIFF and MPO frames, WebP
    canvases). Setting it to ``limit`` itself (not ``limit / 2``, which would make Pillow's *error*
    fire at the limit) means Pillow warns only about images clipdex refuses anyway: an image clipdex
    accepts never warns, so a warnings filter that turns warnings into errors (``-W error``, a test
    runner) can only refuse what clipdex refuses, and none is needed for correctness. Filters are
    process-wide and ``catch_warnings`` is not thread-safe, so nothing here touches them. The error
    at twice the limit is the hard stop for a late size nobody foresaw; clipdex's own checks (after
    open, before load with the sizes below, after load) refuse the band in between. Every decode
    thread writes the same value, read from the limit at call time.
    """
    Image.MAX_IMAGE_PIXELS = max(1, int(limit))


def bomb_pixels(exc: BaseException) -> int | None:
    """The pixel count in Pillow's DecompressionBombError/Warning message, if it names one."""
    found = _BOMB_PIXELS.search(str(exc))
    return int(found.group(1)) if found else None


def _header_pixels(fh: BinaryIO, start: int, icns_length: int | None = None) -> int | None:
    """Pixels of the embedded image at ``start`` of ``fh``, from its header only, read as the
    plugin reads it: an ICO entry is a PNG or else a DIB; an ICNS resource (``icns_length``
    bytes) is a PNG or a JPEG 2000 stream."""
    fh.seek(start)
    sig = fh.read(12)
    fh.seek(start)
    img: Image.Image
    if sig.startswith(_PNG_MAGIC):
        img = PngImagePlugin.PngImageFile(fh)
    elif icns_length is None:
        img = BmpImagePlugin.DibImageFile(fh)  # its height counts the XOR and AND masks, as Pillow's check
    elif sig.startswith(_J2K_MAGICS[:2]) or sig == _J2K_MAGICS[2]:
        img = Jpeg2KImagePlugin.Jpeg2KImageFile(io.BytesIO(fh.read(icns_length)))
    else:
        return None
    return max(1, img.width) * max(1, img.height)


def opening_pixels(fh: BinaryIO) -> int | None:
    """Pixels ``Image.open(fh)`` itself decodes (an ICO's largest entry), else None.

    None too when the file cannot be parsed this way: ``Image.open`` then gives the reason.
    """
    here = fh.tell()
    try:
        fh.seek(0)  # Image.open reads from the start whatever the position
        if fh.read(4) != _ICO_MAGIC:
            return None
        fh.seek(0)
        # The entry Image.open decodes: IcoFile sorts the directory largest first and the plugin
        # opens entry 0's size.
        entries = IcoImagePlugin.IcoFile(fh).entry
        return _header_pixels(fh, entries[0].offset) if entries else None
    except Exception:  # not a readable ICO after all
        return None
    finally:
        fh.seek(here)


def loading_pixels(img: Image.Image) -> int:
    """Pixels ``img.load()`` will allocate: the opened size, a tiled TIFF's tile if larger, or an
    ICNS icon's own header size."""
    opened = max(1, img.width) * max(1, img.height)
    if isinstance(img, TiffImagePlugin.TiffImageFile):
        # libtiff's decoder allocates a whole tile, and a tile may be far larger than the image
        # (a 16x16 image in one 32768x32768 tile took 1 GB); Pillow checks only the image size.
        tile = img.tag_v2.get(TiffImagePlugin.TILEWIDTH), img.tag_v2.get(TiffImagePlugin.TILELENGTH)
        if all(isinstance(side, int) and side > 0 for side in tile):
            return max(opened, tile[0] * tile[1])
        return opened
    if not isinstance(img, IcnsImagePlugin.IcnsImageFile):
        return opened
    try:
        icns = img.icns
        largest = opened
        # The plugin reads every resource of the chosen size; PNG and JPEG 2000 ones carry their
        # own size (the raw ones, it32/il32/..., are the table's fixed size).
        for code, reader in icns.SIZES[img.best_size]:
            desc = icns.dct.get(code)
            if desc is not None and reader is IcnsImagePlugin.read_png_or_jpeg2000:
                pixels = _header_pixels(icns.fobj, desc[0], desc[1])
                largest = max(largest, pixels or 0)
        return largest
    except Exception:  # an unreadable icon: load() gives the reason, Pillow's own check still applies
        return opened
