"""`index --ocr`, `search --words/--by` through the CLI, and a kill -9 in the middle of reading."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.corehelp import assert_one_error_line, json_lines, ok, run
from helpers.textpics import require_cjk_font, text_picture


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_cjk_font()
    folder = tmp_path_factory.mktemp("ocr-cli") / "pics"
    text_picture(folder / "sign.png", ["北京西站 出口"], seed=1)
    text_picture(folder / "bill.png", ["INVOICE 4471"], seed=2)
    text_picture(folder / "plain.png", [], seed=3)
    return folder


def test_index_ocr_json_and_word_search(pictures, tiny_model_dir, tmp_path):
    lib = tmp_path / "lib"
    out = ok("--library", lib, "index", pictures, "--model", tiny_model_dir, "--ocr", "--json")
    counts = json.loads(out.stdout)
    assert (counts["added"], counts["ocr_read"], counts["ocr_failed"]) == (3, 3, 0)
    hits = json_lines(ok("--library", lib, "search", "--words", "西站", "--json").stdout)
    assert [Path(h["path"]).name for h in hits] == ["sign.png"] and "西站" in hits[0]["ocr"]
    both = json_lines(ok("--library", lib, "search", "invoice", "--json").stdout)  # default: both
    assert Path(both[0]["path"]).name == "bill.png" and len(both) == 3
    paths = ok("--library", lib, "search", "a photo", "--words", "invoice", "--paths").stdout.splitlines()
    assert [Path(p).name for p in paths] == ["bill.png"]
    again = json.loads(ok("--library", lib, "index", pictures, "--json").stdout)
    assert (again["unchanged"], again["ocr_read"]) == (3, 0)  # remembered, nothing new to read


@pytest.mark.parametrize(("args", "needle"), [
    (["x", "--words", "(北京"], "not a valid word query"),
    (["x", "--words", "!!"], "no words to search for"),
])  # fmt: skip
def test_bad_words_are_one_line(pictures, tiny_model_dir, tmp_path, args, needle):
    lib = tmp_path / "lib"
    ok("--library", lib, "index", pictures, "--model", tiny_model_dir)
    assert_one_error_line(run("--library", lib, "search", *args), needle)


def test_by_words_needs_text(pictures, tiny_model_dir, tmp_path):
    lib = tmp_path / "lib"
    ok("--library", lib, "index", pictures, "--model", tiny_model_dir)
    res = run("--library", lib, "search", "--image", pictures / "sign.png", "--by", "words")
    assert res.exit_code == 2 and "--by words" in res.stderr


def test_kill_9_while_reading_text_loses_and_duplicates_nothing(tiny_model_dir, tmp_path):
    require_cjk_font()
    folder = tmp_path / "many"
    for n in range(24):
        text_picture(folder / f"p{n:02d}.png", [f"PAGE {n} 第{n}页"], seed=n)
    lib = tmp_path / "lib"
    ok("--library", lib, "index", folder, "--model", tiny_model_dir)  # vectors first, text to read later
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipdex.cli.main", "--library", str(lib), "index", str(folder), "--ocr",
         "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    db = f"file:{lib / 'clipdex.db'}?mode=ro"
    deadline = time.monotonic() + 120
    read = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(db, uri=True) as conn:
                read = conn.execute("SELECT count(*) FROM text_reads").fetchone()[0]
        except sqlite3.OperationalError:
            read = 0  # not migrated yet
        if read >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db, uri=True) as conn:  # what was committed by the time of the kill
        read = conn.execute("SELECT count(*) FROM text_reads").fetchone()[0]
    assert 2 <= read < 24, read  # killed in the middle of the reading
    again = json.loads(ok("--library", lib, "index", folder, "--json").stdout)  # --ocr remembered
    assert again["ocr_read"] == 24 - read and again["added"] == 0
    with sqlite3.connect(db, uri=True) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT item_id) FROM text_reads").fetchone() == (24, 24)
        assert conn.execute("SELECT count(*) FROM items WHERE kind = 'image'").fetchone()[0] == 24
    with sqlite3.connect(db, uri=True) as conn:  # each picture's text read once (no line twice)
        rows = conn.execute("SELECT item_id, text FROM text_lines ORDER BY item_id, ord").fetchall()
    assert len(rows) == 24 and all("PAGE" in text for _, text in rows)
    for n in (7, 23):  # (OCR may read a 0 as an O)
        hits = json_lines(ok("--library", lib, "search", "--words", f"第{n}页", "--json").stdout)
        assert [Path(h["path"]).name for h in hits] == [f"p{n:02d}.png"]
    check = json.loads(run("--library", lib, "check", "--json").stdout)
    assert check["healthy"], check
