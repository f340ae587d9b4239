"""Crafted files whose real pixel size is learned only while decoding (a helper module, not a test).

Each claims a small size when opened and a large one when its pixels are read, the way fuzzed
icons and GIFs do. They are a few hundred bytes; only a decoder that trusts the late size
allocates the claimed pixels.
"""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zeros_zlib(mib: int) -> bytes:
    """A valid zlib stream of ``mib`` MiB of zero bytes, about 1 KB per MiB, built in milliseconds:
    each MiB is compressed once and ends in a full flush (no back-references across it), so the
    same bytes repeat; the Adler-32 of n zeros is (n mod 65521) << 16 | 1."""
    c = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    head = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    final_empty_block = b"\x03\x00"
    return head + again * (mib - 1) + final_empty_block + struct.pack(">I", ((mib << 20) % 65521) << 16 | 1)


def png(width: int, height: int, data_mib: int = 1) -> bytes:
    """An RGBA PNG whose header claims ``width`` x ``height``, with ``data_mib`` MiB of (zero) rows:
    a decoder that trusts the header writes that much into an image of the claimed size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    idat = zeros_zlib(data_mib)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def icns(width: int, height: int, data_mib: int = 1) -> bytes:
    """An ICNS whose one icon (``ic08``: 256x256, so it opens as that) is a PNG of another size."""
    entry = png(width, height, data_mib)
    body = b"ic08" + struct.pack(">I", 8 + len(entry)) + entry
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def ico(width: int, height: int) -> bytes:
    """An ICO whose largest (only) entry says 256x256 and holds a PNG of another size."""
    return ico_holding(png(width, height))


def ico_holding(entry: bytes) -> bytes:
    """An ICO whose one directory entry says 256x256 (the most it can) and holds ``entry``."""
    header = struct.pack("<HHH", 0, 1, 1)
    directory = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(entry), 6 + 16)
    return header + directory + entry


def gif(width: int, height: int, screen: tuple[int, int] = (16, 16)) -> bytes:
    """A GIF with a small logical screen whose first frame spans ``width`` x ``height``."""
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    data = b"\x02" + b"\x02\x4c\x01" + b"\0"  # LZW: clear, one pixel, end (the rest is missing)
    return head + frame + data + b";"


def tiff(tile: int, side: int = 16, data_mib: int = 1) -> bytes:
    """A deflate-compressed ``side`` x ``side`` grey TIFF in one ``tile`` x ``tile`` tile:
    libtiff's decoder allocates the whole tile, whatever the image size."""
    data = zeros_zlib(data_mib)
    # (tag, type: 3 SHORT / 4 LONG, value): width, length, 8 bits, deflate, min-is-black, 1 sample,
    # tile width, tile length, tile offset (right after the directory), tile byte count.
    tags = [(256, 3, side), (257, 3, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1)]
    tags += [(322, 4, tile), (323, 4, tile), (324, 4, 8 + 2 + 12 * 10 + 4), (325, 4, len(data))]
    entries = b"".join(
        struct.pack("<HHI", tag, kind, 1)
        + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, value in tags
    )
    return b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + b"\0\0\0\0" + data
