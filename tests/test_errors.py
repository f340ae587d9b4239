"""Environment failures get one clear line naming the file, never "unexpected …Error"."""

from __future__ import annotations

import errno
import sqlite3

import pytest
from helpers.corehelp import assert_one_error_line, make_images, ok, run

from clipdex.index.store.items import ItemsTable


@pytest.fixture
def lib(tiny_model_dir, tmp_path):
    make_images(tmp_path / "imgs", ["a.png", "b.png"])
    ok("--library", tmp_path / "lib", "index", tmp_path / "imgs", "--model", tiny_model_dir)
    return tmp_path / "lib"


def test_a_damaged_database_is_named(lib):
    db = lib / "clipdex.db"
    for f in lib.glob("clipdex.db-*"):
        f.unlink()
    db.write_bytes(b"this is not SQLite at all " * 200)
    for argv in (["search", "x"], ["info"], ["index", lib.parent / "imgs"]):
        res = run("--library", lib, *argv)
        assert_one_error_line(res, str(db), "is not a clipdex database or is damaged")
    assert db.read_bytes().startswith(b"this is not SQLite")  # nothing re-created over it


def test_disk_full_while_writing(lib, monkeypatch):
    def full(self, *a, **kw):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ItemsTable, "insert", full)
    make_images(lib.parent / "imgs", ["c.png"], seed=5)
    res = run("--library", lib, "index", lib.parent / "imgs")
    assert_one_error_line(
        res, f"disk full while writing {lib / 'clipdex.db'}", "the library is unchanged since the last commit"
    )
    monkeypatch.undo()
    assert '"added": 1' in ok("--library", lib, "index", lib.parent / "imgs", "--json").stdout


@pytest.mark.parametrize(
    "exc, words",
    [
        (
            PermissionError(errno.EACCES, "Permission denied", "/photos/x.faiss"),
            ["permission denied: /photos/x.faiss"],
        ),
        (
            OSError(errno.ENOSPC, "No space left on device", "/lib/images.faiss"),
            ["disk full while writing /lib/images.faiss"],
        ),
    ],
)
def test_os_errors_name_the_file(lib, monkeypatch, exc, words):
    import clipdex.library

    def fail(self, *a, **kw):
        raise exc

    monkeypatch.setattr(clipdex.library.Library, "info", fail)
    res = run("--library", lib, "info")
    assert_one_error_line(res, *words)
    assert "unexpected" not in res.stderr


def test_index_a_file_says_not_a_folder(lib):
    res = run("--library", lib, "index", lib.parent / "imgs" / "a.png")
    assert_one_error_line(res, "not a folder", "a.png")


def test_binary_and_oversized_sidecars_are_skipped_with_one_line(tiny_model_dir, tmp_path):
    imgs = tmp_path / "imgs"
    make_images(imgs, ["a.png", "b.png", "c.png"])
    (imgs / "a.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (imgs / "b.txt").write_bytes(b"x" * (64 * 1024 + 1))
    (imgs / "c.txt").write_text("a real caption")
    res = ok("--library", tmp_path / "lib", "index", imgs, "--model", tiny_model_dir, "--json")
    assert '"texts_added": 1' in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "a.txt" in lines[0] and "b.txt" in lines[1]
    assert "not UTF-8" in lines[0] and "64 KB" in lines[1]
