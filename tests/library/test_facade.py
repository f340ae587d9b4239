"""Indexing end to end: incremental runs, folders, odd files, names, models, the Python API."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import assert_one_error_line, blocks_image, json_lines, make_images, ok, path_ids, run
from helpers.oddfiles import BAD, make_odd_files

from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE
from clipdex.library import Library

ZERO = {"added": 0, "updated": 0, "removed": 0, "unchanged": 0, "failed": 0, "texts_added": 0,
        "texts_updated": 0, "texts_removed": 0, "moved": 0, "skipped_failed": 0}  # fmt: skip


def stats(**counts: int) -> dict:
    return {**ZERO, **counts}


def index_json(lib: Path, *args: object) -> dict:
    out = json_lines(ok("--library", lib, "index", *args, "--json").stdout)
    assert len(out) == 1
    return out[0]


def all_paths(lib: Path) -> set[str]:
    return {h["path"] for h in json_lines(ok("--library", lib, "search", "x", "-k", 1000, "--json").stdout)}


def touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_incremental_counts_and_reopens(tiny_model_dir, tmp_path, opened):
    imgs, lib = tmp_path / "imgs", tmp_path / "lib"
    files = make_images(imgs, ["a.png", "b.png", "c.png", "d.png", "e.png"])
    for stem in "abd":
        (imgs / f"{stem}.txt").write_text(f"caption {stem}")
    assert index_json(lib, imgs, "--model", tiny_model_dir) == stats(added=5, texts_added=3)
    assert len(opened) == 5
    old_ids = path_ids(lib)

    opened.clear()
    assert index_json(lib, imgs) == stats(unchanged=5)
    assert opened == []

    # c changed, d (with its caption) deleted, f new; a's caption changed, b's removed, e's added.
    blocks_image(500).save(files["c.png"])
    touch_later(files["c.png"])
    files["d.png"].unlink()
    make_images(imgs, ["f.png"], seed=3)
    (imgs / "a.txt").write_text("a new caption for a")
    touch_later(imgs / "a.txt")
    (imgs / "b.txt").unlink()
    (imgs / "e.txt").write_text("caption e")
    opened.clear()
    assert index_json(lib, imgs) == stats(
        added=1, updated=1, removed=1, unchanged=3, texts_added=1, texts_updated=1, texts_removed=2
    )
    assert sorted(opened) == sorted(bytes(files[n]) for n in ("c.png",)) + [bytes(imgs / "f.png")]

    new_ids = path_ids(lib)
    c = bytes(files["c.png"])
    assert new_ids[c] == old_ids[c]  # a changed file is updated in place: its id stays
    assert all(new_ids[bytes(files[n])] == old_ids[bytes(files[n])] for n in ("a.png", "b.png", "e.png"))
    assert str(files["d.png"]) not in all_paths(lib)
    assert all_paths(lib) == {str(imgs / n) for n in ("a.png", "b.png", "c.png", "e.png", "f.png")}
    texts = json_lines(ok("--library", lib, "search", "x", "--target", "texts", "-k", 99, "--json").stdout)
    assert {(t["text"], os.path.basename(t["path"])) for t in texts} == {
        ("a new caption for a", "a.png"),
        ("caption e", "e.png"),
    }
    opened.clear()
    assert index_json(lib, imgs) == stats(unchanged=5)
    assert opened == []


def test_unchanged_run_writes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    """Empty and whitespace-only sidecars hold no caption: a re-run must not rewrite anything."""
    import clipdex.library.model_slot as model_slot
    from clipdex.index.faiss.index_set import IndexSet

    imgs, lib = tmp_path / "imgs", tmp_path / "lib"
    make_images(imgs, ["a.png", "b.png", "c.png"])
    (imgs / "a.txt").write_text("")
    (imgs / "b.txt").write_text("  \n")
    (imgs / "c.txt").write_text("a real caption")
    assert index_json(lib, imgs, "--model", tiny_model_dir) == stats(added=3, texts_added=1)
    generation = json_lines(ok("--library", lib, "info", "--json").stdout)[0]["generation"]
    loads, faiss_loads = [], []
    monkeypatch.setattr(model_slot, "load_model", lambda *a, **k: loads.append(a))
    real_get = IndexSet.get
    monkeypatch.setattr(
        IndexSet,
        "get",
        lambda self, kind: (faiss_loads.append(kind), real_get(self, kind))[1],
    )
    assert index_json(lib, imgs) == stats(unchanged=3)
    assert faiss_loads == []  # nothing written: the FAISS files are not even read
    assert json_lines(ok("--library", lib, "info", "--json").stdout)[0]["generation"] == generation
    assert loads == []  # nothing to embed: the model is not even loaded
    (imgs / "c.txt").unlink()  # removing a caption needs no model either
    assert index_json(lib, imgs) == stats(unchanged=3, texts_removed=1)
    assert loads == []


def test_failed_update_drops_old_vector(tiny_model_dir, tmp_path):
    imgs, lib = tmp_path / "imgs", tmp_path / "lib"
    files = make_images(imgs, ["a.png", "b.png"])
    index_json(lib, imgs, "--model", tiny_model_dir)
    files["a.png"].write_bytes(b"now garbage")
    res = ok("--library", lib, "index", imgs, "--json")
    assert json_lines(res.stdout) == [stats(unchanged=1, failed=1)]
    assert all_paths(lib) == {str(files["b.png"])}


def test_second_folder_keeps_first_and_missing_folder_removes_nothing(tiny_model_dir, tmp_path):
    lib = tmp_path / "lib"
    a = make_images(tmp_path / "A", ["1.png", "2.png"], seed=1)
    b = make_images(tmp_path / "B", ["3.png"], seed=2)
    assert index_json(lib, tmp_path / "A", "--model", tiny_model_dir) == stats(added=2)
    assert index_json(lib, tmp_path / "B") == stats(added=1)
    assert all_paths(lib) == {str(p) for p in (*a.values(), *b.values())}
    # A is gone from disk too, but the run names a missing FOLDER: exit 1, nothing removed.
    a["1.png"].unlink()
    res = run("--library", lib, "index", tmp_path / "A", tmp_path / "nope", "--json")
    assert_one_error_line(res, "nope")
    assert res.stdout == ""
    assert len(all_paths(lib)) == 3
    assert index_json(lib, tmp_path / "A") == stats(removed=1, unchanged=1)


def test_odd_and_corrupt_files(tiny_model_dir, tmp_path):
    files = make_odd_files(tmp_path / "odd")
    (tmp_path / "odd" / "notes.md").write_text("not an image, ignored, not failed")
    lib = tmp_path / "lib"
    res = ok("--library", lib, "index", tmp_path / "odd", "--model", tiny_model_dir, "--json")
    assert json_lines(res.stdout) == [stats(added=len(files) - len(BAD), failed=len(BAD))]
    lines = res.stderr.splitlines()
    assert len(lines) == len(BAD)
    for name in BAD:
        assert sum(str(files[name]) in line for line in lines) == 1, (name, lines)
    assert "Traceback" not in res.stdout + res.stderr
    assert all_paths(lib) == {str(p) for n, p in files.items() if n not in BAD}


def test_non_utf8_file_name(tiny_model_dir, tmp_path):
    imgs, lib = tmp_path / "imgs", tmp_path / "lib"
    make_images(imgs, ["plain.png"])
    raw = os.path.join(os.fsencode(imgs), b"caf\xe9.png")
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    with os.fdopen(fd, "wb") as f:
        blocks_image(77).save(f, "PNG")
    assert index_json(lib, imgs, "--model", tiny_model_dir) == stats(added=2)
    assert raw in path_ids(lib)  # stored losslessly, the exact bytes
    shown = str(imgs) + "/caf\ufffd.png"  # replacement character where the byte is
    table = ok("--library", lib, "search", "--image", raw, "-k", 1).stdout
    assert shown in table and "\\x" not in table
    res = ok("--library", lib, "search", "--image", raw, "-k", 1, "--json")
    res.stdout_bytes.decode("utf-8")  # valid UTF-8 JSON
    hit = json_lines(res.stdout)[0]
    assert hit["path"] == shown and hit["score"] >= 0.9999
    assert base64.b64decode(hit["path_b64"]) == raw  # the exact bytes
    plain = json_lines(
        ok("--library", lib, "search", "--image", imgs / "plain.png", "-k", 1, "--json").stdout
    )[0]
    assert plain["path"] == str(imgs / "plain.png") and "path_b64" not in plain  # only when needed
    # --paths and -0 write the raw bytes: the printed name opens the file.
    paths = ok("--library", lib, "search", "x", "-k", 5, "--paths").stdout_bytes.split(b"\n")
    assert sorted(paths) == sorted([b"", raw, os.fsencode(imgs / "plain.png")])
    nul = ok("--library", lib, "search", "x", "-k", 5, "-0").stdout_bytes
    assert sorted(nul.split(b"\0")) == sorted([b"", raw, os.fsencode(imgs / "plain.png")])
    assert all(os.path.exists(p) for p in nul.split(b"\0") if p)
    with Library.open(lib) as opened:  # the Python API: a str that opens the file
        (top,) = opened.search(image=raw, k=1)
        assert top.path == os.fsdecode(raw) and os.path.exists(top.path) and top.path_bytes == raw
    assert index_json(lib, imgs) == stats(unchanged=2)


@pytest.mark.parametrize("include_hidden", [False, True])
@pytest.mark.parametrize("lib_name", ["library", ".clipdex"])
def test_hidden_files_and_library_inside_folder(tiny_model_dir, tmp_path, include_hidden, lib_name):
    root = tmp_path / "photos"
    make_images(root, ["a.png", ".b.png", "._c.png", ".hid/d.png", "sub/e.png", "sub/.f.png"])
    lib = root / lib_name
    ok("--library", lib, "index", root, "--model", tiny_model_dir, "--quiet")
    make_images(lib, ["inside.png"])  # an image in the library dir is never indexed
    flags = ["--include-hidden"] if include_hidden else []
    index_json(lib, root, *flags)
    want = {"a.png", "sub/e.png"} | ({".b.png", ".hid/d.png", "sub/.f.png"} if include_hidden else set())
    assert all_paths(lib) == {str(root / n) for n in want}


def test_model_refused_then_reembedded(tiny_model_dir, tiny_model_dir2, tmp_path):
    imgs, lib = tmp_path / "imgs", tmp_path / "lib"
    files = make_images(imgs, ["a.png", "b.png", "c.png"])
    index_json(lib, imgs, "--model", tiny_model_dir)
    before = json_lines(ok("--library", lib, "search", "--image", files["a.png"], "--json").stdout)
    refused = run("--library", lib, "index", imgs, "--model", tiny_model_dir2)
    assert_one_error_line(refused, str(tiny_model_dir), "tiny-b", "--reembed")
    info = json_lines(ok("--library", lib, "info", "--json").stdout)[0]
    assert info["model"] == f"local-dir:{tiny_model_dir}"
    # Same spec again, spelled differently: accepted.
    rel = os.path.relpath(tiny_model_dir)
    assert index_json(lib, imgs, "--model", f"local-dir:{rel}") == stats(unchanged=3)
    assert index_json(lib, imgs, "--model", tiny_model_dir2, "--reembed") == stats(unchanged=3, dropped=0)
    info = json_lines(ok("--library", lib, "info", "--json").stdout)[0]
    assert info["model"] == f"local-dir:{tiny_model_dir2}" and info["images"] == 3
    after = json_lines(ok("--library", lib, "search", "--image", files["a.png"], "--json").stdout)
    assert after[0]["path"] == str(files["a.png"]) and after[0]["score"] >= 0.9999
    assert [h["score"] for h in after] != [h["score"] for h in before]  # really the other model's vectors
    # Now the old model is the foreign one.
    assert_one_error_line(run("--library", lib, "index", imgs, "--model", tiny_model_dir), "tiny-b")


def test_python_api(tiny_model_dir, tmp_path, monkeypatch):
    import clipdex.library.model_slot as model_slot
    from clipdex import Library  # noqa: F811  (the public import path)

    files = make_images(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    (tmp_path / "imgs" / "b.txt").write_text("the b caption")
    loads = []
    real = model_slot.load_model
    monkeypatch.setattr(model_slot, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    lib = Library.open(tmp_path / "lib", create=True, model=str(tiny_model_dir))
    stats_ = lib.index(tmp_path / "imgs")
    assert (stats_.added, stats_.texts_added) == (3, 1)
    hits = lib.search(text="a photo", k=2)
    assert [h.rank for h in hits] == [1, 2] and all(h.modality == "image" for h in hits)
    assert set(hits[0].to_dict()) == {"rank", "score", "modality", "id", "path"}
    assert hits[0].to_dict()["path"] == hits[0].path
    model = lib.model  # loaded by the index run: no load here
    for q in ("one", "two", "three"):
        lib.search(text=q)
    lib.search(image=files["c.png"], k=1)
    assert lib.model is model and len(loads) == 1  # loaded once, kept for every search

    store = Store(tmp_path / "lib")
    ids, vecs = store.vectors.all(IMAGE)
    store.close()
    v = vecs[list(ids).index(path_ids(tmp_path / "lib")[bytes(files["b.png"])])]
    for scale in (1.0, 7.5):  # a query vector is normalised
        top = lib.search(vector=(v * scale).tolist(), k=1)[0]
        assert top.path == str(files["b.png"]) and abs(top.score - 1) < 1e-5
    text_hit = lib.search(vector=v, k=1, target="texts")[0]
    assert (text_hit.text, text_hit.path, text_hit.modality) == ("the b caption", str(files["b.png"]), "text")
    assert set(text_hit.to_dict()) == {"rank", "score", "modality", "id", "path", "text"}
    with pytest.raises(ValueError):
        lib.search(text="x", vector=v)
    lib.close()
    with Library.open(tmp_path / "lib") as again:  # no model given: the stored one
        assert again.search(vector=np.asarray(v) * 3, k=1)[0].path == str(files["b.png"])
        assert json.loads(again.spec.to_json())["name"] == f"local-dir:{tiny_model_dir}"
