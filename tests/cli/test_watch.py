"""`clipdex watch` as a real process: kill -9 mid-burst then a restart leaves every picture exactly
once; --json lines; SIGTERM exits 0 (one test: each process start costs seconds of imports)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from helpers.corehelp import make_images, ok
from helpers.watchhelp import image_paths, wait_for

REPO = Path(__file__).parents[2]


class WatchProcess:
    """``clipdex watch`` in a subprocess, its stdout lines and stderr collected as they come."""

    def __init__(self, lib: Path, *args: object):
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        argv = [sys.executable, "-m", "clipdex.cli.main", "--library", str(lib), "watch", *map(str, args)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.lines: list[dict] = []
        self.err: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()

    def _read(self, stream, is_json: bool) -> None:
        for line in stream:
            if is_json:
                self.lines.append(json.loads(line))
            else:
                self.err.append(line.decode(errors="replace"))

    def watching(self) -> bool:
        return any("watching" in line for line in self.err)


def test_kill_9_mid_burst_then_a_restart_is_clean_and_sigterm_exits_0(tiny_model_dir, tmp_path):
    photos, lib = tmp_path / "photos", tmp_path / "lib"
    make_images(photos, ["seed.png"])
    ok("--library", lib, "index", photos, "--model", f"local-dir:{tiny_model_dir}")
    w = WatchProcess(lib, photos, "--json", "--debounce", "0.2", "--batch-size", "4")
    try:
        wait_for(w.watching, timeout=60, what="watching")
        names = [f"{n:03d}.png" for n in range(80)]
        make_images(photos / "burst", names, seed=3)
        wait_for(lambda: len(w.lines) >= 3, timeout=30, what="some batches")
        w.proc.kill()  # SIGKILL, in the middle of the burst
        w.proc.wait(timeout=10)
    finally:
        w.proc.kill()
    landed = len(image_paths(lib))
    assert 1 < landed < 81, landed  # really in the middle
    # A restart takes up what the killed one left: each picture exactly once, the library sound.
    again = WatchProcess(lib, photos, "--json", "--debounce", "0.2")
    try:
        wait_for(again.watching, timeout=60, what="the restart's first pass")
        make_images(photos, ["late.png"], seed=4)  # and it follows events again
        wait_for(lambda: os.fsencode(photos / "late.png") in image_paths(lib), what="late.png")
        wait_for(lambda: again.lines and again.lines[-1]["added"] == 1, what="its --json line")
        again.proc.send_signal(signal.SIGTERM)  # finishes the batch under way, exits 0
        assert again.proc.wait(timeout=20) == 0, "".join(again.err)
    finally:
        again.proc.kill()
    assert set(again.lines[0]) == {"added", "updated", "moved", "removed", "failed"}
    assert sum(line["added"] for line in w.lines + again.lines) <= 81  # a line may die with the process
    paths = image_paths(lib)
    assert len(paths) == len(set(paths)) == 82
    assert sorted(os.path.basename(p).decode() for p in paths if b"/burst/" in p) == names
    check = json.loads(ok("--library", lib, "check", "--json").stdout)
    assert check["healthy"], check
