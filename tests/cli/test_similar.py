"""`clipdex similar`: by path and by id, text items, digit-named files, errors."""

from __future__ import annotations

import pytest
from helpers.corehelp import assert_one_error_line, brute_force, json_lines, make_images, ok, run, stored


def test_similar_by_path_and_by_id(library, tmp_path):
    target = tmp_path / "pics" / "s3.png"
    by_path = json_lines(ok("--library", library, "similar", target, "-k", "4", "--json").stdout)
    assert by_path[0]["path"] == str(target) and by_path[0]["score"] == pytest.approx(1.0, abs=1e-5)
    ids, vecs = stored(library, "image")
    item = by_path[0]["id"]
    want = [i for i, _ in brute_force(ids, vecs, vecs[list(ids).index(item)], 5) if i != item][:3]
    assert [r["id"] for r in by_path[1:]] == want
    assert [r["rank"] for r in by_path] == [1, 2, 3, 4]
    by_id = json_lines(ok("--library", library, "similar", str(item), "-k", "4", "--json").stdout)
    assert by_id == by_path
    paths = ok("--library", library, "similar", str(item), "-k", "2", "--paths").stdout.splitlines()
    assert paths == [r["path"] for r in by_path[:2]]
    nul = ok("--library", library, "similar", str(item), "-k", "2", "-0").stdout
    assert nul == "".join(p + "\0" for p in paths)
    table = ok("--library", library, "similar", str(item), "-k", "2").stdout
    assert str(target) in table.splitlines()[0]


def test_similar_of_a_text_item_ranks_texts(library, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("one\ntwo\n", encoding="utf-8")
    ok("--library", library, "add-texts", texts, "--quiet")
    ids, _ = stored(library, "text")
    out = json_lines(ok("--library", library, "similar", str(int(ids[-1])), "--json").stdout)
    assert out[0]["id"] == int(ids[-1]) and out[0]["text"] == "two"
    assert {r["modality"] for r in out} == {"text"} and len(out) == 3


def test_similar_digit_named_file_is_a_path(library, tmp_path, monkeypatch):
    pics = tmp_path / "pics"
    (pics / "1").write_bytes(b"no extension: never indexed")
    assert run("--library", library, "similar", "1").exit_code == 0  # id 1 exists ...
    monkeypatch.chdir(pics)  # ... but here "1" is an existing file, so a path
    result = run("--library", library, "similar", "1")
    assert_one_error_line(result, "is not in the library")


def test_similar_errors(library, tmp_path):
    assert_one_error_line(run("--library", library, "similar", "999999"), "no item with id 999999")
    assert_one_error_line(run("--library", library, "similar", "9" * 30), "no item with id")
    outside = make_images(tmp_path / "elsewhere", ["x.png"])["x.png"]
    assert_one_error_line(run("--library", library, "similar", outside), "is not in the library")
    assert run("--library", library, "similar", "1", "-k", "0").exit_code == 2
    assert run("--library", library, "similar", "1", "--json", "--paths").exit_code == 2
