"""Images whose real size is learned only while decoding: refused before anything is allocated.

The crafted files (tests/helpers/bombfiles.py) open small and claim their real size later: an ICNS icon's
PNG header, an ICO entry's PNG header (decoded inside ``Image.open``), a GIF frame larger than
its logical screen, a TIFF tile larger than its image. Two sizes each: just over clipdex's limit
(under Pillow's own error, which is twice it: only clipdex's checks stand there) and far over it
(2.7e11 pixels, as the fuzzed file).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import bombfiles
from helpers.allocations import HUGE, Allocations, spy_on_allocations, too_large
from PIL import Image

from clipdex.retrieval import decode
from clipdex.retrieval.decode import DecodeError, image_size, open_image

BOMBS: dict[str, tuple[str, Callable[[int, int], bytes], int, int]] = {
    "icns-over": ("icns", bombfiles.icns, 400, 400),
    "icns-huge": ("icns", bombfiles.icns, HUGE, HUGE),
    "ico-over": ("ico", bombfiles.ico, 400, 400),
    "ico-huge": ("ico", bombfiles.ico, HUGE, HUGE),
    "gif-over": ("gif", bombfiles.gif, 400, 400),
    "gif-huge": ("gif", bombfiles.gif, 65535, 65535),
    # A 16x16 TIFF in one tile, which libtiff allocates whole (not an Image.core allocation).
    "tiff-tile-over": ("tif", lambda w, h: bombfiles.tiff(w), 512, 512),
    "tiff-tile-huge": ("tif", lambda w, h: bombfiles.tiff(w), 32768, 32768),
}


@pytest.fixture
def allocations(monkeypatch: pytest.MonkeyPatch) -> Allocations:
    return spy_on_allocations(monkeypatch)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_late_sizes_are_refused_before_anything_is_allocated(
    name: str, tmp_path: Path, allocations: Allocations
) -> None:
    ext, make, w, h = BOMBS[name]
    data = make(w, h)
    path = tmp_path / f"bomb.{ext}"
    path.write_bytes(data)
    for src in (path, io.BytesIO(data)):  # a file (index, watch) and a stream (embed, serve)
        with pytest.raises(DecodeError) as e:
            open_image(src, on_info=lambda info: None)
        assert str(e.value) == too_large(w * h)
    assert image_size(path) is None  # the header reader (duplicates, serve's details) too
    assert allocations.over == [] and decode._budget.used == 0


def test_the_budget_is_reserved_for_the_size_really_allocated(tmp_path: Path, allocations) -> None:
    """Late sizes under the limit decode, and the budget covers each allocation when it happens."""
    real = io.BytesIO()
    Image.new("RGBA", (300, 300), (10, 200, 30, 255)).save(real, "PNG")
    (tmp_path / "big-entry.ico").write_bytes(bombfiles.ico_holding(real.getvalue()))  # decoded by open
    Image.new("RGB", (300, 300), (1, 2, 3)).save(tmp_path / "exif.png")  # its getexif() decodes it
    gif = io.BytesIO()
    Image.new("P", (300, 200), 1).save(gif, "GIF")
    # The same GIF with a 16x16 logical screen: its frame (300x200) is found only at the frame.
    (tmp_path / "wide-frame.gif").write_bytes(gif.getvalue()[:6] + b"\x10\0\x10\0" + gif.getvalue()[10:])
    allocations.uncovered.clear()  # making the files above counted too
    for name, size in [
        ("big-entry.ico", (300, 300)),
        ("exif.png", (300, 300)),
        ("wide-frame.gif", (300, 200)),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow: the ICO entry "was not the expected size"
            assert open_image(tmp_path / name, on_info=lambda info: None).size == size, name
    assert allocations.uncovered == [] and allocations.over == []
    assert decode._budget.peak == 90_000


def test_pillow_checks_stay_on_and_warnings_as_errors_refuse_nothing_we_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "MAX_PIXELS", 10_000)
    Image.new("RGB", (100, 100)).save(tmp_path / "at.png")
    Image.new("RGB", (101, 100)).save(tmp_path / "over.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would raise here
        assert open_image(tmp_path / "at.png").size == (100, 100)
        with pytest.raises(DecodeError, match=r"^image too large: 10100 pixels \(limit 10000\)$"):
            open_image(tmp_path / "over.png")
    assert Image.MAX_IMAGE_PIXELS == 10_000  # armed from clipdex's limit, not off
    with pytest.raises(Image.DecompressionBombError):  # so plain Pillow refuses bombs too
        Image.open(io.BytesIO(bombfiles.ico(HUGE, HUGE)))
