"""The CLI's contracts: JSON shapes, output modes, exit codes, errors, the writer lock, start-up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import (
    assert_one_error_line,
    brute_force,
    indexed_sample,
    json_lines,
    make_images,
    ok,
    run,
    stored,
)
from helpers.locks import hold_lock

import clipdex

INDEX_KEYS = ["added", "updated", "removed", "unchanged", "failed", "texts_added", "texts_updated",
              "texts_removed", "moved", "skipped_failed"]  # fmt: skip
IMAGE_KEYS = {"rank", "score", "modality", "id", "path"}


@pytest.fixture(scope="module")
def small(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A read-only library: 6 images, one with a caption, two free texts."""
    root = tmp_path_factory.mktemp("cli")
    files = make_images(root / "imgs", [f"img{i}.png" for i in range(6)], seed=5)
    (root / "imgs" / "img2.txt").write_text("the caption of image two")
    lib = root / "lib"
    res = ok("--library", lib, "index", root / "imgs", "--model", tiny_model_dir, "--json")
    (root / "t.txt").write_text("first free text\nsecond free text\n")
    ok("--library", lib, "add-texts", root / "t.txt", "--quiet")
    return {"lib": lib, "files": files, "root": root, "index_out": res.stdout}


def search(small: dict, *args: object) -> list[dict]:
    return json_lines(ok("--library", small["lib"], "search", *args, "--json").stdout)


def test_index_json_is_one_line_with_exact_keys(small):
    out = small["index_out"]
    assert out.count("\n") == 1 and out.endswith("\n")
    obj = json.loads(out)
    assert list(obj) == INDEX_KEYS
    assert obj["added"] == 6 and obj["texts_added"] == 1
    assert all(type(v) is int for v in obj.values())


def test_search_json_lines(small):
    hits = search(small, "anything", "-k", 4)
    assert len(hits) == 4
    for rank, h in enumerate(hits, start=1):
        assert set(h) == IMAGE_KEYS and h["rank"] == rank and h["modality"] == "image"
        assert type(h["id"]) is int and type(h["score"]) is float
        assert os.path.isabs(h["path"]) and os.path.exists(h["path"])
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert len(search(small, "anything")) == 6  # default k 10, only 6 stored
    assert search(small, "a", "red", "bus") == search(small, "a red bus")  # unquoted words joined


def test_search_texts_json_lines(small):
    hits = search(small, "--image", small["files"]["img2.png"], "--target", "texts")
    assert len(hits) == 3
    for h in hits:
        assert set(h) == IMAGE_KEYS | {"text"} and h["modality"] == "text"
    by_text = {h["text"]: h["path"] for h in hits}
    assert by_text == {
        "the caption of image two": str(small["files"]["img2.png"]),
        "first free text": None,
        "second free text": None,
    }


def test_paths_and_nul(small):
    want = [h["path"] for h in search(small, "query", "-k", 3)]
    out = ok("--library", small["lib"], "search", "query", "-k", 3, "--paths").stdout
    assert out == "".join(p + "\n" for p in want)
    out = ok("--library", small["lib"], "search", "query", "-k", 3, "-0").stdout
    assert out == "".join(p + "\0" for p in want)
    # --target texts --paths: the linked image paths only (free texts have none).
    out = ok("--library", small["lib"], "search", "x", "--target", "texts", "--paths").stdout
    assert out == str(small["files"]["img2.png"]) + "\n"


def test_table_output(small):
    out = ok("--library", small["lib"], "search", "query", "-k", 2).stdout.splitlines()
    hits = search(small, "query", "-k", 2)
    assert len(out) == 2
    for line, h in zip(out, hits):
        assert line.split()[0] == str(h["rank"]) and line.endswith(h["path"])
        assert abs(float(line.split()[1]) - h["score"]) < 1e-4


def test_info_json(small, tiny_model_dir):
    out = ok("--library", small["lib"], "info", "--json").stdout
    assert out.count("\n") == 1
    info = json.loads(out)
    assert info["model"] == f"local-dir:{tiny_model_dir}" and info["dim"] == 64
    assert (info["images"], info["texts"]) == (6, 3)
    human = ok("--library", small["lib"], "info").stdout
    assert "64" in human and str(tiny_model_dir) in human


@pytest.mark.parametrize(
    "name, content, column",
    [
        ("a.txt", "one\n\n  two  \nthree\n", None),
        ("a.csv", "id,title\n1,one\n2,two\n3,three\n", "title"),
        ("a.tsv", "text\tx\none\t1\ntwo\t2\nthree\t3\n", None),
        ("a.jsonl", '{"t": "one"}\n{"t": "two"}\n\n{"t": "three"}\n', "t"),
    ],
)
def test_add_texts_formats(tiny_model_dir, tmp_path, name, content, column):
    (tmp_path / name).write_text(content)
    lib = tmp_path / "lib"
    args = ["--library", lib, "add-texts", tmp_path / name, "--model", tiny_model_dir, "--json"]
    res = ok(*args, *(["--column", column] if column else []))
    assert res.stdout.count("\n") == 1 and json.loads(res.stdout) == {"added": 3, "unchanged": 0}
    hits = json_lines(ok("--library", lib, "search", "two", "--target", "texts", "--json").stdout)
    assert hits[0]["text"] == "two" and hits[0]["score"] >= 0.9999 and hits[0]["path"] is None
    assert sorted(h["text"] for h in hits) == ["one", "three", "two"]


def test_add_texts_missing_column(tiny_model_dir, tmp_path):
    (tmp_path / "a.csv").write_text("id,title\n1,one\n")
    res = run("--library", tmp_path / "lib", "add-texts", tmp_path / "a.csv", "--model", tiny_model_dir)
    assert_one_error_line(res, "'text'", "title")
    res = run("--library", tmp_path / "lib", "add-texts", tmp_path / "a.csv", "--column", "nope")
    assert_one_error_line(res, "'nope'")


@pytest.mark.parametrize(
    "args",
    [[], ["--json"], ["--not", "x"], ["--not-image", "x.png"], ["hello", "--json", "--paths"],
     ["hello", "-0", "--json"], ["hello", "-k", "0"], ["hello", "-k", "-3"], ["hello", "--target", "videos"],
     ["hello", "--after", "June"], ["hello", "--before", "2024-13-01"], ["hello", "--not", " "],
     ["hello", "--captioned", "--target", "texts"]],
)  # fmt: skip
def test_search_usage_errors_exit_2(small, args):
    res = run("--library", small["lib"], "search", *args)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert res.stdout == "" and "Traceback" not in res.stderr and "Usage" in res.stderr


def test_runtime_errors_exit_1(tiny_model_dir, small, tmp_path):
    assert_one_error_line(run("--library", tmp_path / "none", "search", "x"), "no library")
    (tmp_path / "t.txt").write_text("only a text\n")
    ok("--library", tmp_path / "lib", "add-texts", tmp_path / "t.txt", "--model", tiny_model_dir)
    assert_one_error_line(run("--library", tmp_path / "lib", "search", "x"), "no images")
    (tmp_path / "empty").mkdir()
    ok("--library", tmp_path / "lib2", "index", tmp_path / "empty", "--model", tiny_model_dir, "--quiet")
    assert_one_error_line(run("--library", tmp_path / "lib2", "search", "x"), "no images")
    assert_one_error_line(run("--library", tmp_path / "lib2", "search", "x", "--target", "texts"), "no texts")
    (tmp_path / "bad.png").write_text("not a png")
    res = run("--library", small["lib"], "search", "--image", tmp_path / "bad.png")
    assert_one_error_line(res, "bad.png")
    res = run("--library", small["lib"], "search", "--image", tmp_path / "missing.png")
    assert_one_error_line(res, "missing.png")
    assert res.stdout == ""


def test_offline_pretrained_model_fails_fast(tmp_path):
    make_images(tmp_path / "imgs", ["a.png"])
    start = time.monotonic()
    res = run("--library", tmp_path / "lib", "index", tmp_path / "imgs", "--model", "ViT-B-32",
              "--pretrained", "laion2b_s34b_b79k")  # fmt: skip
    assert time.monotonic() - start < 30
    assert_one_error_line(res, "ViT-B-32")
    assert "offline" in res.stderr or "local-dir" in res.stderr
    # Nothing recorded: the model never loaded.
    assert_one_error_line(run("--library", tmp_path / "lib", "search", "x"), "no images")


def test_version_and_quiet(tiny_model_dir, tmp_path):
    assert ok("--version").stdout.strip().endswith(clipdex.__version__)
    make_images(tmp_path / "imgs", ["a.png", "b.png"])
    res = ok("--library", tmp_path / "lib", "index", tmp_path / "imgs", "--model", tiny_model_dir)
    assert res.stdout == "" and "2 added" in res.stderr
    (tmp_path / "imgs" / "b.png").write_text("broken now")
    res = ok("--library", tmp_path / "lib", "index", tmp_path / "imgs", "--quiet")
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and "b.png" in res.stderr  # per-file problems still shown
    (tmp_path / "t.txt").write_text("x\n")
    res = ok("--library", tmp_path / "lib", "add-texts", tmp_path / "t.txt", "--quiet")
    assert res.stdout == res.stderr == ""


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"], ["index", "--help"]])
def test_help_does_not_import_heavy_modules(argv):
    code = (
        "import sys\nfrom clipdex.cli.main import cli\n"
        f"try:\n    cli({argv!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'open_clip', 'faiss') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout and "HEAVY []" in out.stdout


def test_a_cold_search_opens_no_more_than_it_needs(tmp_path, tiny_model_dir):
    """A cold `clipdex search` pays for torch and open_clip already; nothing else heavy on top
    (sqlite-utils imports pandas when installed: ~0.2 s)."""
    lib = indexed_sample(tmp_path, tiny_model_dir, 4, seed=1)
    code = (
        "import sys\nfrom clipdex.cli.main import cli\n"
        f"cli(['--library', {str(lib)!r}, 'search', 'x', '--json'], standalone_mode=False)\n"
        "from clipdex.library import Library\n"
        "print('EXTRA', sorted(m for m in ('sqlite_utils', 'pandas', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(json_lines(out.stdout.split("EXTRA")[0])) == 4 and "EXTRA []" in out.stdout


@pytest.mark.parametrize("writer", ["index", "add-texts"])
def test_writer_lock_names_holder_and_dies_with_it(small, tmp_path, monkeypatch, writer):
    import shutil

    lib = tmp_path / "lib"
    shutil.copytree(small["lib"], lib)
    monkeypatch.setenv("CLIPDEX_LOCK_TIMEOUT", "0.5")
    holder = hold_lock(lib)
    try:
        target = small["root"] / ("imgs" if writer == "index" else "t.txt")
        res = run("--library", lib, writer, target)
        assert_one_error_line(
            res, f"another clipdex process (pid {holder.pid}: clipdex index /photos/holiday) is writing "
            f"to library {lib}"
        )  # fmt: skip
        # Readers are not blocked by a held lock.
        assert len(json_lines(ok("--library", lib, "search", "x", "--json").stdout)) == 6
        ok("--library", lib, "info")
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the kernel releases the lock
        holder.wait()
    res = ok("--library", lib, writer, target, "--json")
    assert json.loads(res.stdout) == (
        {"added": 0, "unchanged": 2}
        if writer == "add-texts"
        else dict.fromkeys(INDEX_KEYS, 0) | {"unchanged": 6}
    )


def test_lock_file_content_alone_does_not_lock(small, tmp_path, monkeypatch):
    """A lock file left behind (dead holder, or a reused pid that is alive) never blocks a writer."""
    import shutil

    lib = tmp_path / "lib"
    shutil.copytree(small["lib"], lib)
    monkeypatch.setenv("CLIPDEX_LOCK_TIMEOUT", "0.5")
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "cmd": "x"}
    (lib / "write.lock").write_text(json.dumps(holder))
    ok("--library", lib, "index", small["root"] / "imgs")


@pytest.mark.parametrize("index_type", ["sq8", "binary", "ivf-fp16"])
def test_index_type_is_remembered_and_scores_stay_exact(tiny_model_dir, tmp_path, index_type):
    folder = tmp_path / "imgs"
    make_images(folder, [f"{i}.png" for i in range(6)])
    lib = tmp_path / "lib"
    ok("--library", lib, "index", folder, "--model", tiny_model_dir, "--index-type", index_type)
    info = json.loads(ok("--library", lib, "info", "--json").stdout)
    assert info["indexes"]["images"]["requested"] == index_type  # too few vectors to train: flat for now
    # Grow the library past the training minimum: the remembered type is built.
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(1500, info["dim"])).astype(np.float32)
    np.save(tmp_path / "v.npy", vecs)
    (tmp_path / "m.csv").write_text("path\n" + "".join(f"/x/{i}.jpg\n" for i in range(1500)))
    ok("--library", lib, "import-embeddings", tmp_path / "v.npy", tmp_path / "m.csv")
    info = json.loads(ok("--library", lib, "info", "--json").stdout)
    assert info["indexes"]["images"]["type"] == index_type and info["images"] == 1506
    if index_type == "ivf-fp16":  # `info` tells how the index is laid out and what it was tuned to
        from clipdex.index.faiss.policy import ivf_layout

        image_index = info["indexes"]["images"]
        params, (nlist, coarse) = image_index["params"], ivf_layout(1506, info["dim"])
        assert (params["nlist"], params["coarse_dim"]) == (nlist, coarse), params
        assert 1 <= params["nprobe"] <= nlist and image_index["recall_at_10"] >= 0.95, image_index
        human = ok("--library", lib, "info").stdout
        assert f"'nlist': {nlist}, 'coarse_dim': {coarse}, 'nprobe': {params['nprobe']}" in human
    ids, stored_vecs = stored(lib, "image")
    query = stored_vecs[3]
    hits = json_lines(ok("--library", lib, "search", "--image", folder / "3.png", "--json", "-k", "5").stdout)
    assert hits[0]["path"].endswith("3.png") and hits[0]["score"] >= 0.9999
    exact = brute_force(ids, stored_vecs, query, 5)
    assert [h["id"] for h in hits][:1] == [exact[0][0]]
    for h in hits:  # scores are exact cosine from the stored vectors, whatever the index
        assert h["score"] == pytest.approx(float(stored_vecs[list(ids).index(h["id"])] @ query), abs=1e-6)
    assert_one_error_line(run("--library", lib, "index", folder, "--index-type", "nope"), "nope")


def test_model_init_never_overwrites_a_folder(tmp_path):
    photos = tmp_path / "photos"
    make_images(photos, ["keep.png"])
    assert_one_error_line(run("model", "init", "ViT-B-32", "--out", photos), "not empty")
    assert (photos / "keep.png").is_file()
    from clipdex.errors import ModelError
    from clipdex.retrieval.models import save_local_dir

    with pytest.raises(ModelError, match="not a model directory"):
        save_local_dir(object(), {}, {}, photos)
    assert (photos / "keep.png").is_file()


def test_cli_help_does_not_import_heavy_modules():
    code = (
        "import sys, clipdex.cli.main\n"
        "heavy = [m for m in ('torch', 'faiss', 'open_clip', 'fastapi', 'uvicorn') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
