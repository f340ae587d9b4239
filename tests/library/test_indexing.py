"""Stable identity: updates in place, moves recognised, failures remembered, re-embedding drops nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import assert_one_error_line, blocks_image, json_lines, make_images, ok, run

from clipdex.index.store.database import Store


def index_json(lib: Path, *args: object) -> dict:
    (out,) = json_lines(ok("--library", lib, "index", *args, "--json").stdout)
    return out


def info(lib: Path) -> dict:
    return json_lines(ok("--library", lib, "info", "--json").stdout)[0]


def rows(lib: Path) -> dict[int, tuple]:
    """id -> (kind, source, path, text, image_id, vector bytes) straight from SQLite."""
    store = Store(lib)
    try:
        return {
            r[0]: tuple(bytes(x) if isinstance(x, bytes) else x for x in r[1:])
            for r in store.conn.execute("SELECT id, kind, source, path, text, image_id, vector FROM items")
        }
    finally:
        store.close()


def test_moved_files_keep_id_vector_and_caption(tiny_model_dir, tmp_path, opened):
    root, lib = tmp_path / "photos", tmp_path / "lib"
    make_images(root / "a", ["x.png", "y.png", "same.png"])
    shutil.copy(root / "a" / "same.png", root / "a" / "twin.png")  # identical content, other path
    (root / "a" / "x.txt").write_text("a caption for x")
    first = index_json(lib, root, "--model", tiny_model_dir)
    assert (first["added"], first["texts_added"]) == (4, 1)
    before = rows(lib)
    by_path = {v[2]: k for k, v in before.items() if v[0] == "image"}

    (root / "b").mkdir()
    os.rename(root / "a" / "x.png", root / "b" / "x.png")  # moved with its caption
    os.rename(root / "a" / "x.txt", root / "b" / "x.txt")
    os.rename(root / "a" / "y.png", root / "a" / "renamed.png")  # renamed in place
    opened.clear()
    assert index_json(lib, root) == {
        "added": 0, "updated": 0, "removed": 0, "unchanged": 2, "failed": 0, "texts_added": 0,
        "texts_updated": 0, "texts_removed": 0, "moved": 2, "skipped_failed": 0,
    }  # fmt: skip
    assert opened == []  # nothing re-decoded, nothing re-encoded
    after = rows(lib)
    assert set(after) == set(before)  # same ids, nothing added or removed
    x_id, y_id = by_path[os.fsencode(root / "a" / "x.png")], by_path[os.fsencode(root / "a" / "y.png")]
    assert after[x_id][2] == os.fsencode(root / "b" / "x.png") and after[x_id][5] == before[x_id][5]
    assert after[y_id][2] == os.fsencode(root / "a" / "renamed.png") and after[y_id][5] == before[y_id][5]
    (caption,) = [k for k, v in after.items() if v[1] == "sidecar"]
    assert after[caption][4] == x_id and after[caption][2] == os.fsencode(root / "b" / "x.txt")
    assert after[caption][5] == before[caption][5]
    hit = json_lines(ok("--library", lib, "search", "a caption for x", "--target", "texts", "--json").stdout)[
        0
    ]
    assert hit["id"] == caption and hit["path"] == str(root / "b" / "x.png")
    assert info(lib)["indexes"]["images"]["ntotal"] == 4
    assert index_json(lib, root)["unchanged"] == 4


def test_a_move_out_of_this_runs_folders_is_a_removal(tiny_model_dir, tmp_path):
    root, lib = tmp_path / "photos", tmp_path / "lib"
    make_images(root / "a", ["x.png"])
    (root / "b").mkdir()
    index_json(lib, root / "a", "--model", tiny_model_dir)
    os.rename(root / "a" / "x.png", root / "b" / "x.png")
    out = index_json(lib, root / "a", root / "b")
    assert (out["moved"], out["added"], out["removed"]) == (1, 0, 0)
    os.rename(root / "b" / "x.png", root / "elsewhere.png")  # outside both FOLDERs now
    out = index_json(lib, root / "b")
    assert (out["moved"], out["removed"]) == (0, 1)


def test_changed_file_is_updated_in_place(tiny_model_dir, tmp_path):
    imgs, lib = tmp_path / "imgs", tmp_path / "lib"
    files = make_images(imgs, ["a.png", "b.png"])
    (imgs / "a.txt").write_text("first caption")
    index_json(lib, imgs, "--model", tiny_model_dir)
    before = rows(lib)
    blocks_image(77).save(files["a.png"])
    st = files["a.png"].stat()
    os.utime(files["a.png"], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    (imgs / "a.txt").write_text("second caption")
    out = index_json(lib, imgs)
    assert (out["updated"], out["added"], out["texts_updated"], out["texts_added"]) == (1, 0, 1, 0)
    after = rows(lib)
    assert set(after) == set(before)  # ids kept, for the image and its caption
    a_id = next(k for k, v in before.items() if v[2] == os.fsencode(files["a.png"]))
    assert after[a_id][5] != before[a_id][5]
    # FAISS follows: the new content is found under the old id, once.
    hits = json_lines(ok("--library", lib, "search", "--image", files["a.png"], "--json").stdout)
    assert hits[0]["id"] == a_id and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["id"] for h in hits].count(a_id) == 1
    texts = json_lines(ok("--library", lib, "search", "caption", "--target", "texts", "--json").stdout)
    assert [t["text"] for t in texts] == ["second caption"]
    assert info(lib)["indexes"]["images"]["ntotal"] == 2 and info(lib)["indexes"]["texts"]["ntotal"] == 1


def test_failures_are_remembered_until_the_file_changes(tiny_model_dir, tmp_path, opened):
    imgs, lib = tmp_path / "imgs", tmp_path / "lib"
    make_images(imgs, ["good.png"])
    bad = imgs / "bad.png"
    bad.write_bytes(b"not an image at all")
    (imgs / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (imgs / "loop1.jpg").symlink_to(imgs / "loop2.jpg")
    (imgs / "loop2.jpg").symlink_to(imgs / "loop1.jpg")
    res = ok("--library", lib, "index", imgs, "--model", tiny_model_dir, "--json")
    out = json_lines(res.stdout)[0]
    assert (out["added"], out["failed"], out["skipped_failed"]) == (1, 4, 0)
    problems = res.stderr.strip().splitlines()
    assert len(problems) == 4 and all(p.startswith("clipdex: skipped ") for p in problems)
    assert "dangling symbolic link" in res.stderr and res.stderr.count("symbolic link loop") == 2
    assert info(lib)["failed_files"] == 1

    opened.clear()
    out = index_json(lib, imgs)
    assert (out["unchanged"], out["failed"], out["skipped_failed"]) == (1, 3, 1)
    assert opened == []  # the broken file is not decoded again
    assert "failed:    1 files" in ok("--library", lib, "info").stdout

    out = index_json(lib, imgs, "--retry-failed")
    assert (out["failed"], out["skipped_failed"]) == (4, 0) and opened == [os.fsencode(bad)]
    assert index_json(lib, imgs)["skipped_failed"] == 1  # failed again: still remembered

    blocks_image(5).save(bad)  # fixed: it changed, so it is tried (and now succeeds)
    out = index_json(lib, imgs)
    assert (out["added"], out["skipped_failed"]) == (1, 0)
    assert info(lib)["failed_files"] == 0
    bad.write_bytes(b"broken again")
    st = bad.stat()
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert index_json(lib, imgs)["failed"] == 4  # its old vector is dropped, the failure recorded
    assert info(lib)["failed_files"] == 1 and index_json(lib, imgs)["skipped_failed"] == 1
    bad.unlink()
    index_json(lib, imgs)
    assert info(lib)["failed_files"] == 0  # a vanished file's failure is forgotten


# ---- re-embedding never drops silently --------------------------------------------------------------
@pytest.fixture
def mixed(tiny_model_dir, tmp_path) -> dict:
    """A library of 3 scanned images + 2 imported vectors whose files are not on this machine."""
    imgs, lib = tmp_path / "imgs", tmp_path / "lib"
    make_images(imgs, ["a.png", "b.png", "c.png"])
    (imgs / "a.txt").write_text("caption a")
    index_json(lib, imgs, "--model", tiny_model_dir)
    vecs = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    np.save(tmp_path / "v.npy", vecs)
    (tmp_path / "m.csv").write_text("path\n/elsewhere/one.jpg\n/elsewhere/two.jpg\n")
    ok("--library", lib, "import-embeddings", tmp_path / "v.npy", tmp_path / "m.csv")
    return {"lib": lib, "imgs": imgs}


@pytest.mark.parametrize("how", ["use-model", "index"])
def test_reembedding_refuses_to_drop_items_without_a_file(mixed, tiny_model_dir, tiny_model_dir2, how):
    lib = mixed["lib"]
    before = rows(lib)
    argv = (
        ["use-model", tiny_model_dir2] if how == "use-model"
        else ["index", mixed["imgs"], "--model", tiny_model_dir2, "--reembed"]
    )  # fmt: skip
    refused = run("--library", lib, *argv)
    assert_one_error_line(refused, "2 images", "/elsewhere/one.jpg", "--drop-unembeddable")
    assert rows(lib) == before and info(lib)["model"] == f"local-dir:{tiny_model_dir}"

    res = ok("--library", lib, *argv, "--drop-unembeddable", "--json")
    assert json_lines(res.stdout)[0]["dropped"] == 2
    after = rows(lib)
    assert {v[2] for v in after.values() if v[0] == "image"} == {
        os.fsencode(mixed["imgs"] / n) for n in ("a.png", "b.png", "c.png")
    }
    assert len(after) == 4 and info(lib)["model"] == f"local-dir:{tiny_model_dir2}"
    assert all(after[i][5] != before[i][5] for i in after)  # every kept item re-embedded


def test_reembedding_refuses_when_a_photo_is_missing_or_unreadable(mixed, tiny_model_dir2, tmp_path):
    lib = mixed["lib"]
    store = Store(lib, write=True)
    store.items.delete([i for i, p, _ in store.items.iter("image") if b"elsewhere" in p])
    store.close()
    (mixed["imgs"] / "b.png").unlink()  # an unplugged disk: the file is gone, the item not
    assert_one_error_line(run("--library", lib, "use-model", tiny_model_dir2), "1 images", "b.png")
    blocks_image(1).save(mixed["imgs"] / "b.png")
    (mixed["imgs"] / "c.png").write_bytes(b"garbage now")  # present but undecodable
    refused = run("--library", lib, "use-model", tiny_model_dir2)
    assert refused.exit_code == 1 and "c.png" in refused.stderr and "could not be decoded" in refused.stderr
    assert info(lib)["images"] == 3
    res = ok("--library", lib, "use-model", tiny_model_dir2, "--drop-unembeddable", "--json")
    assert json_lines(res.stdout)[0]["dropped"] == 1 and info(lib)["images"] == 2


def test_finetune_has_the_drop_flag():
    assert "--drop-unembeddable" in ok("finetune", "--help").stdout
