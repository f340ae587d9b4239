"""Decoding odd files to RGB, draft JPEG decoding, and the ordered prefetch pool."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers.oddfiles import BAD, SIZES, make_odd_files
from PIL import Image

from clipdex.retrieval import decode
from clipdex.retrieval.decode import DecodeError, load_and_preprocess, open_image
from clipdex.retrieval.prefetch import ordered_prefetch


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_odd_files(tmp_path_factory.mktemp("odd"))


GOOD = sorted(SIZES)


@pytest.mark.parametrize("name", GOOD)
def test_good_files_decode_to_rgb(odd: dict[str, Path], name: str) -> None:
    if name not in odd:
        pytest.skip(f"{name}: this Pillow cannot write it")
    img = open_image(odd[name])
    assert img.mode == "RGB"
    assert img.size == SIZES[name]
    np.asarray(img)  # pixel data is really there (load() happened)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("zero.jpg", "zero-byte file"), ("truncated.jpg", "truncated"), ("text.jpg", "not an image")],
)
def test_bad_files_raise_one_line_decode_error(odd: dict[str, Path], name: str, reason: str) -> None:
    assert name in BAD
    with pytest.raises(DecodeError) as info:
        open_image(odd[name])
    message = str(info.value)
    assert reason in message
    assert "\n" not in message and len(message) < 200


def test_missing_file_and_directory_are_decode_errors(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="file not found"):
        open_image(tmp_path / "nope.jpg")
    with pytest.raises(DecodeError):
        open_image(tmp_path)


def test_truncated_jpeg_is_not_silently_grey_filled(odd: dict[str, Path]) -> None:
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(DecodeError):
        open_image(odd["truncated.jpg"])


def test_exif_rotation_by_size_and_pixels(odd: dict[str, Path]) -> None:
    with Image.open(odd["rotated.jpg"]) as raw:
        assert raw.size == (40, 20)  # stored landscape
    img = open_image(odd["rotated.jpg"])
    assert img.size == (20, 40)
    arr = np.asarray(img).astype(int)
    top, bottom = arr[:15].mean(axis=(0, 1)), arr[25:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60  # red half: was on the left, rotated 90 deg clockwise to the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_16bit_gradient_is_scaled_not_saturated(odd: dict[str, Path]) -> None:
    with Image.open(odd["gray16.png"]) as raw:
        assert raw.mode.startswith("I")
    arr = np.asarray(open_image(odd["gray16.png"])).astype(int)
    assert 60 < arr.mean() < 200
    assert arr.min() <= 5 and arr.max() >= 250
    assert np.all(np.diff(arr[0, :, 0]) >= 0)  # still a monotone ramp


def test_float_and_int32_modes(tmp_path: Path) -> None:
    ramp = np.linspace(0.0, 1.0, 32, dtype=np.float32)[None, :].repeat(4, 0)
    Image.fromarray(ramp).save(tmp_path / "f.tiff")
    arr = np.asarray(open_image(tmp_path / "f.tiff")).astype(int)
    assert arr.min() <= 1 and arr.max() >= 254
    wide = np.linspace(-1000, 100000, 32).astype(np.int32)[None, :].repeat(4, 0)
    Image.fromarray(wide).save(tmp_path / "i.tiff")
    arr = np.asarray(open_image(tmp_path / "i.tiff")).astype(int)
    assert arr.min() == 0 and arr.max() == 255


def test_transparency_composited_over_white(odd: dict[str, Path]) -> None:
    pal = np.asarray(open_image(odd["palette.png"]))
    assert tuple(pal[4, 2]) == (255, 255, 255)  # transparent (black) palette entry
    assert tuple(pal[4, 12]) == (255, 0, 0)
    rgba = np.asarray(open_image(odd["rgba.png"]))
    assert tuple(rgba[5, 10]) == (255, 255, 255)
    assert tuple(rgba[5, 2]) == (0, 0, 255)


def test_cmyk_and_animated_gif(odd: dict[str, Path]) -> None:
    cmyk = np.asarray(open_image(odd["cmyk.jpg"])).astype(int)
    assert cmyk[10, 0, 2] > 180 and cmyk[10, -1, 0] > 180  # blue-ish left, red-ish right, not inverted
    gif = np.asarray(open_image(odd["anim.gif"]))
    assert tuple(gif[5, 5]) == (255, 0, 0)  # first frame


def test_plain_rgb_decode_is_exact(odd: dict[str, Path]) -> None:
    with Image.open(odd["good.jpg"]) as ref:
        expected = np.asarray(ref.convert("RGB"))
    assert np.array_equal(np.asarray(open_image(odd["good.jpg"])), expected)


def test_draft_reduces_large_jpeg_but_not_below_target(odd: dict[str, Path]) -> None:
    img = open_image(odd["big.jpg"], draft_to=(224, 224))
    assert img.width >= 224 and img.height >= 224
    assert img.width < 1600 and img.height < 1200
    assert img.mode == "RGB"


def test_no_draft_under_twice_the_target(odd: dict[str, Path]) -> None:
    # 1600 >= 2*700 but 1200 < 2*700: both sides must qualify.
    assert open_image(odd["big.jpg"], draft_to=(700, 700)).size == (1600, 1200)
    assert open_image(odd["good.jpg"], draft_to=(224, 224)).size == (32, 24)


def test_png_is_never_drafted(tmp_path: Path) -> None:
    Image.new("RGB", (600, 500), (10, 20, 30)).save(tmp_path / "big.png")
    assert open_image(tmp_path / "big.png", draft_to=(64, 64)).size == (600, 500)


def test_non_utf8_bytes_path(odd: dict[str, Path], tmp_path: Path) -> None:
    target = os.fsencode(tmp_path) + b"/caf\xe9.jpg"
    with open(target, "wb") as fh:
        fh.write(odd["good.jpg"].read_bytes())
    img = open_image(target)
    assert img.size == (32, 24) and img.mode == "RGB"


def test_pixel_limit(odd: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_PIXELS", 500)
    with pytest.raises(DecodeError, match=r"^image too large: 768 pixels \(limit 500\)$"):
        open_image(odd["good.jpg"])
    assert open_image(odd["gray.pgm"]).size == (17, 9)  # 153 pixels: under the limit


def test_pixel_limit_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPDEX_MAX_PIXELS", "1234")
    assert decode._env_max_pixels() == 1234
    monkeypatch.setenv("CLIPDEX_MAX_PIXELS", "junk")
    assert decode._env_max_pixels() == 178_956_970


def test_pillow_bomb_error_becomes_decode_error(
    odd: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def bomb(*args: object, **kwargs: object) -> Image.Image:
        raise Image.DecompressionBombError("Image size (1 pixels) exceeds limit")

    monkeypatch.setattr(decode.Image, "open", bomb)
    with pytest.raises(DecodeError, match="image too large"):
        open_image(odd["good.jpg"])


def test_load_and_preprocess(odd: dict[str, Path]) -> None:
    torch = pytest.importorskip("torch")
    tensor = load_and_preprocess(odd["good.jpg"], lambda im: torch.from_numpy(np.asarray(im).copy()))
    assert tuple(tensor.shape) == (24, 32, 3)
    with pytest.raises(DecodeError):
        load_and_preprocess(odd["text.jpg"], lambda im: torch.zeros(1))


def _old_to_8bit(arr: np.ndarray, sixteen: bool) -> np.ndarray:
    """The reference: the whole image in float64 (what decoding did before it worked in blocks)."""
    a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = a.min(), a.max()
    if sixteen:
        a = a / 257.0
    elif lo < 0 or hi > 255:
        a = (a - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_high_bit_depth_without_full_size_float64_copies(mode: str, monkeypatch) -> None:
    import tracemalloc

    monkeypatch.setattr(decode, "ROWS_PIXELS", 1 << 16)
    rng = np.random.default_rng(0)
    h, w = 1500, 1400
    if mode == "I;16":
        arr = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        img = Image.fromarray(arr)
        assert img.mode == "I;16"
    else:
        arr = (rng.standard_normal((h, w)) * 1000).astype(np.float32)
        img = Image.fromarray(arr, "F")
    tracemalloc.start()
    out = decode._to_8bit(img)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(np.asarray(out), _old_to_8bit(np.asarray(img), mode == "I;16"))
    # Pillow's own copies of the pixels (2 x 4 B for "F"), the 8-bit result (1 B) and small blocks;
    # the former whole-image float64 path peaked at over 24 B a pixel.
    assert peak < 10 * h * w, peak


def test_pixel_budget_bounds_concurrent_decodes(odd: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    paths = []
    for i in range(8):
        p = tmp_path / f"{i}.png"
        Image.new("RGBA", (100, 100), (i * 20, 0, 0, 128)).save(p)
        paths.append(p)
    budget = decode.PixelBudget(15_000)  # one 10k-pixel image at a time
    monkeypatch.setattr(decode, "_budget", budget)
    got = [r for _, r in ordered_prefetch(lambda p: np.asarray(open_image(p)), paths, workers=4)]
    assert all(isinstance(r, np.ndarray) and r.shape == (100, 100, 3) for r in got)
    assert budget.peak == 10_000 and budget.used == 0
    monkeypatch.setattr(decode, "_budget", decode.PixelBudget(9_999))
    with pytest.raises(DecodeError, match="too large for the memory available"):
        open_image(paths[0])


@pytest.mark.parametrize(("mode", "value"), [("I", -5), ("I", 70_000), ("F", 300.0), ("F", -0.5)])
def test_a_single_value_outside_8_bits_decodes_black(mode, value):
    """One value outside 0..255 has no range to stretch (it divided by zero: the image failed)."""
    out = decode._to_8bit(Image.new(mode, (7, 5), value))
    assert out.mode == "L" and out.size == (7, 5) and not np.asarray(out).any()
