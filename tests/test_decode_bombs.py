"""Images whose real size is learned only while decoding: refused before anything is allocated.

The crafted files (tests/bombfiles.py) open small and claim their real size later: an ICNS icon's
PNG header, an ICO entry's PNG header (decoded inside ``Image.open``), a GIF frame larger than
its logical screen, a TIFF tile larger than its image. Two sizes each: just over clipdex's limit
(under Pillow's own error, which is twice it: only clipdex's checks stand there) and far over it
(2.7e11 pixels, as the fuzzed file).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import bombfiles
import pytest
from corehelp import json_lines, make_images, ok
from PIL import Image

from clipdex.retrieval import decode
from clipdex.retrieval.decode import DecodeError, image_size, open_image

LIMIT = 100_000
HUGE = 1 << 19  # 524288 x 524288 = 274877906944 pixels claimed

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


class Allocations:
    """Pillow's image allocations (``Image.core.new`` / ``fill``), as pixel counts.

    One over ``limit`` is recorded and refused with MemoryError, so even a broken decoder never
    allocates a bomb in the test process; ``uncovered`` are those the pixel budget had not reserved.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.over: list[int] = []
        self.uncovered: list[int] = []

    def wrap(self, real: Callable) -> Callable:
        def allocate(mode: str, size: tuple[int, int], *args: object) -> object:
            pixels = size[0] * size[1]
            budget = decode._budget
            if budget is not None and budget.used < pixels:
                self.uncovered.append(pixels)
            if pixels > self.limit:
                self.over.append(pixels)
                raise MemoryError(f"test refused to allocate {pixels} pixels")
            return real(mode, size, *args)

        return allocate


@pytest.fixture
def allocations(monkeypatch: pytest.MonkeyPatch) -> Allocations:
    spy = Allocations(LIMIT)
    monkeypatch.setattr(decode, "MAX_PIXELS", LIMIT)
    monkeypatch.setattr(decode, "_budget", decode.PixelBudget(10 * LIMIT))
    for name in ("new", "fill"):
        monkeypatch.setattr(Image.core, name, spy.wrap(getattr(Image.core, name)))
    return spy


def too_large(pixels: int, limit: int = LIMIT) -> str:
    return f"image too large: {pixels} pixels (limit {limit})"


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


def _run_watched(args: list[str], rss_cap_kb: int) -> tuple[int, str, str, int]:
    """Run ``args``; kill it if its RSS passes ``rss_cap_kb`` (so a regression cannot take the
    machine). Returns (exit status, stdout, stderr, its peak RSS in kB)."""
    root = str(Path(decode.__file__).parents[2])  # this checkout's clipdex, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    killed = threading.Event()

    def watch() -> None:
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                return
            if rss > rss_cap_kb:
                killed.set()
                proc.kill()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = (stream.decode() for stream in proc.communicate(timeout=300))
    watcher.join()
    assert not killed.is_set(), f"killed: RSS over {rss_cap_kb} kB"
    peak = int(err.rsplit("peak_rss_kb=", 1)[1].split()[0]) if "peak_rss_kb=" in err else -1
    return proc.returncode, out, err, peak


CHILD = """
import atexit, sys
from clipdex.cli.main import cli
def peak():
    with open("/proc/self/status") as f:
        print("peak_rss_kb=" + next(l.split()[1] for l in f if l.startswith("VmHWM:")), file=sys.stderr)
atexit.register(peak)
cli(sys.argv[1:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for RSS")
def test_index_run_refuses_the_bombs_and_goes_on_within_bounded_memory(tiny_model_dir, tmp_path, opened):
    imgs, lib = tmp_path / "imgs", tmp_path / "lib"
    make_images(imgs, ["a.png", "b.png", "c.png"])
    # 3.5 GB of zero rows in 3.6 MB: a decoder that trusts the late size writes them all.
    (imgs / "fuzzed.icns").write_bytes(bombfiles.icns(HUGE, HUGE, data_mib=3500))
    (imgs / "fuzzed.ico").write_bytes(bombfiles.ico(HUGE, HUGE))
    (imgs / "fuzzed.gif").write_bytes(bombfiles.gif(65535, 65535))
    args = [sys.executable, "-c", CHILD, "--library", str(lib), "index", str(imgs)]
    rc, out, err, peak_kb = _run_watched([*args, "--model", str(tiny_model_dir), "--json"], 3_000_000)
    assert rc == 0, err
    stats = json_lines(out)[0]
    assert (stats["added"], stats["failed"]) == (3, 3), stats
    skipped = sorted(line for line in err.splitlines() if line.startswith("clipdex: skipped "))
    limit = decode._env_max_pixels()
    assert skipped == [
        f"clipdex: skipped {imgs / 'fuzzed.gif'}: {too_large(65535 * 65535, limit)}",
        f"clipdex: skipped {imgs / 'fuzzed.icns'}: {too_large(HUGE * HUGE, limit)}",
        f"clipdex: skipped {imgs / 'fuzzed.ico'}: {too_large(HUGE * HUGE, limit)}",
    ], err
    assert 0 < peak_kb < 3_000_000, peak_kb
    again = json.loads(ok("--library", lib, "index", imgs, "--json").stdout.splitlines()[0])
    assert (again["unchanged"], again["skipped_failed"], again["failed"]) == (3, 3, 0)
    assert opened == []  # remembered: the bombs are not decoded again


@pytest.fixture
def library(tmp_path: Path, tiny_model_dir: Path) -> Path:
    make_images(tmp_path / "pics", ["p0.png", "p1.png"])
    ok("--library", tmp_path / "lib", "index", tmp_path / "pics", "--model", tiny_model_dir, "--quiet")
    return tmp_path / "lib"


def test_serve_upload_of_a_bomb_is_400_and_the_server_goes_on(client, allocations) -> None:
    upload = bombfiles.icns(HUGE, HUGE, data_mib=3500)
    r = client.post("/api/search", files={"image": ("q.icns", upload, "image/icns")})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"cannot read the uploaded image: {too_large(HUGE * HUGE)}"
    assert allocations.over == []
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good, "PNG")
    r = client.post("/api/search", files={"image": ("q.png", good.getvalue())}, data={"k": "2"})
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_a_refused_picture_is_one_line_without_pillows_warning(tiny_model_dir, tmp_path, monkeypatch):
    """Between clipdex's limit and Pillow's error (twice it), Pillow only warns: the CLI says it once."""
    monkeypatch.setattr(decode, "MAX_PIXELS", 2_000)
    make_images(tmp_path / "imgs", ["fine.png"], size=40)  # 1,600 pixels
    Image.new("RGB", (50, 50)).save(tmp_path / "imgs" / "big.png")  # 2,500: warned, not refused by Pillow
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = ok(
            "--library", tmp_path / "lib", "index", tmp_path / "imgs", "--model", tiny_model_dir, "--json"
        )
    assert json_lines(res.stdout)[0]["failed"] == 1
    (line,) = res.stderr.splitlines()
    assert "big.png" in line and "image too large: 2500 pixels" in line
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
