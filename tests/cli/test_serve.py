"""The `clipdex serve` command (its process: URL, Ctrl-C, refusals) and the demo ending by serving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from helpers.corehelp import assert_one_error_line, run


def test_serve_refuses_a_public_address_without_token(library, monkeypatch):
    monkeypatch.delenv("CLIPDEX_TOKEN", raising=False)
    result = run("--library", library, "serve", "--host", "0.0.0.0")
    assert result.exit_code == 2 and "needs --token" in result.stderr


def test_serve_without_library_exits_1(tmp_path):
    assert_one_error_line(run("--library", tmp_path / "none", "serve", "--port", "0"), "no library")


def serve_then_ctrl_c(argv: list[str], timeout: float = 300) -> tuple[dict, str, str]:
    """Start a serving process, read its URL from stdout, fetch /api/info and the page, Ctrl-C it.
    Returns (info, stdout, stderr); asserts a clean exit 0."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        while "clipdex: serving" not in (line := proc.stdout.readline()):
            assert line, ("".join(seen), proc.stderr.read())
            seen.append(line)
        url = line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        for _ in range(100):  # the URL is printed just before uvicorn accepts
            try:
                with urllib.request.urlopen(url + "api/info", timeout=5) as r:
                    info = json.load(r)
                break
            except OSError:
                time.sleep(0.1)
        with urllib.request.urlopen(url, timeout=5) as r:
            assert b"<title>clipdex</title>" in r.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "clipdex: stopped" in err and "Traceback" not in err
        return info, "".join(seen) + line + out, err
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_serve_process_prints_url_serves_and_stops_on_ctrl_c(library):
    argv = [sys.executable, "-m", "clipdex.cli.main", "--library", str(library), "serve", "--port", "0"]
    info, out, err = serve_then_ctrl_c(argv)
    assert info["images"] == 6
    assert out.count("\n") == 1  # stdout: the URL line only
    assert "GET /api/info" in err  # uvicorn's access log, on stderr


def test_demo_ends_by_serving(tmp_path):
    argv = [sys.executable, "-m", "clipdex.demo", "--out", str(tmp_path / "demo"), "--scenes", "40",
            "--epochs", "1", "--serve", "--port", "0"]  # fmt: skip
    info, out, _ = serve_then_ctrl_c(argv)
    assert info["images"] == 40 and "Demo finished" in out
