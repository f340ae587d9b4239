"""Videos in a real browser (Debian chromium): the viewer's <video> loads over Range requests and
starts at the moment's t; a kill -9 while a long video is indexed loses nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers.corehelp import json_lines, make_images, ok
from helpers.videos import has_encoder, make_video, scene

from clipdex.library import Library
from clipdex.serve.app import create_app
from tests.e2e.test_serve_live import browser_page, live_server, need_browser


def test_the_viewer_plays_a_video_from_its_moment(tmp_path, tiny_model_dir):
    browser = need_browser()
    if not has_encoder("libvpx"):
        pytest.skip("PyAV without a VP8 encoder")  # Debian's chromium plays VP8/VP9, not always H.264
    root = tmp_path / "media"
    make_video(root / "clip.webm", [(scene(0), 4.0), (scene(1), 4.0), (scene(2), 4.0)], codec="libvpx")
    ok("--library", tmp_path / "lib", "index", root, "--model", tiny_model_dir, "--quiet")
    lib = Library.open(tmp_path / "lib")
    with (
        live_server(create_app(lib, thumbnails=tmp_path / "t")) as url,
        browser_page(browser) as (page, errors),
    ):
        page.goto(f"{url}/?q=a+white+wall&media=videos")
        page.wait_for_function("document.querySelectorAll('#grid .hit .play').length === 3")
        badges = sorted(page.locator("#grid .hit .play").all_inner_texts())
        assert badges == ["▶ 0:00", "▶ 0:04", "▶ 0:08"]
        page.locator("#grid .hit", has_text="0:04").click()
        page.wait_for_selector("#viewer[open]")
        page.wait_for_function(
            "(() => { const v = document.getElementById('viewer-video');"
            " return !v.hidden && v.readyState >= 1 && Math.abs(v.currentTime - 4) < 0.5; })()"
        )
        assert "0:04 – 0:08" in page.locator("#viewer-meta").inner_text()
        assert page.locator("#video-span").is_visible()
        page.keyboard.press("Escape")
        page.wait_for_function("!document.getElementById('viewer-video').hasAttribute('src')")  # stopped
    lib.close()
    assert errors == []


def test_kill_9_while_a_long_video_is_indexed_loses_nothing(tmp_path, tiny_model_dir):
    root, lib = tmp_path / "media", tmp_path / "lib"
    make_images(root, ["photo.png"])
    make_video(root / "long.mp4", [(scene(n % 6), 1.0) for n in range(240)], fps=8)  # 4 min, a scene a second
    argv = [sys.executable, "-m", "clipdex.cli.main", "--library", str(lib), "index", str(root), "--model",
            str(tiny_model_dir), "--video-interval", "0.25", "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    photo_in = False
    while proc.poll() is None and time.monotonic() < deadline and not photo_in:
        time.sleep(0.05)
        try:  # the photo is committed first, then the video is decoded
            with sqlite3.connect(f"file:{lib / 'clipdex.db'}?mode=ro", uri=True) as db:
                photo_in = db.execute("SELECT count(*) FROM items WHERE source = 'scan'").fetchone()[0] == 1
        except sqlite3.Error:
            continue
    # Killed at once: the video's decode starts right after the photo's commit (a quiet machine
    # indexes the whole 4-minute video in about a second).
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before the kill"
    with sqlite3.connect(f"file:{lib / 'clipdex.db'}?mode=ro", uri=True) as db:
        assert (
            db.execute("SELECT count(*) FROM items WHERE source = 'video'").fetchone()[0] == 0
        )  # no half video
    out = json_lines(ok("--library", lib, "index", root, "--video-interval", "0.25", "--json").stdout)[0]
    assert (out["added"], out["unchanged"], out["failed"]) == (1, 1, 0)
    check = json_lines(ok("--library", lib, "check", "--json").stdout)[0]
    assert check["healthy"], check
    with sqlite3.connect(f"file:{lib / 'clipdex.db'}?mode=ro", uri=True) as db:
        spans = db.execute("SELECT t, t_end FROM items WHERE source = 'video' ORDER BY t").fetchall()
    assert len(spans) == out["frames"] and spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(240, abs=0.5)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # the spans tile the video
