"""Images whose real size is learned only while decoding: refused before anything is allocated.

The crafted files (tests/helpers/bombfiles.py) open small and claim their real size later: an ICNS icon's
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
from pathlib import Path

import pytest
from helpers import bombfiles
from helpers.allocations import HUGE, Allocations, spy_on_allocations, too_large
from helpers.corehelp import json_lines, make_images, ok
from PIL import Image

from clipdex.retrieval import decode


@pytest.fixture
def allocations(monkeypatch: pytest.MonkeyPatch) -> Allocations:
    return spy_on_allocations(monkeypatch)


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
