"""`clipdex check [--repair] [--json]`: finds each kind of damage; a repair fixes derived data only."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import indexed_sample, ok, run, stored

from clipdex.index.faiss.vector_index import VectorIndex
from clipdex.kinds import IMAGE, TEXT


@pytest.fixture(scope="module")
def base_lib(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return indexed_sample(tmp_path_factory.mktemp("check"), tiny_model_dir, 6, seed=4)


@pytest.fixture
def lib(base_lib: Path, tmp_path: Path) -> Path:
    shutil.copytree(base_lib, tmp_path / "lib")
    return tmp_path / "lib"


def check(lib: Path, *args: str) -> tuple[int, dict]:
    res = run("--library", lib, "check", "--json", *args)
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout + res.stderr
    return res.exit_code, json.loads(lines[0])


def sql(lib: Path, *statements: str) -> None:
    conn = sqlite3.connect(lib / "clipdex.db")
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()


def test_healthy(lib):
    assert check(lib) == (0, {"healthy": True, "problems": [], "repaired": []})
    assert "library is healthy" in ok("--library", lib, "check").stderr


def _drop_from_faiss(lib: Path, n: int) -> None:
    path = lib / "images.faiss"
    idx = VectorIndex.load(path)
    idx.remove(idx.ids()[:n])
    idx.save(path)  # same generation: only an id comparison can tell


@pytest.mark.parametrize("damage", ["faiss_ids", "faiss_missing", "orphan", "leftovers", "pending"])
def test_damage_found_and_repaired(lib, damage):
    before_ids = stored(lib, IMAGE)[0]
    kept = lib / "models" / "finetune-mine"
    kept.mkdir(parents=True)
    (kept / "open_clip_config.json").write_text("{}")
    if damage == "faiss_ids":
        _drop_from_faiss(lib, 2)
    elif damage == "faiss_missing":
        (lib / "images.faiss").unlink()
    elif damage == "orphan":
        sql(lib, "DELETE FROM items WHERE id = (SELECT image_id FROM items WHERE kind = 'text')")
    elif damage == "leftovers":
        (lib / "models" / ".finetune-20260101-000000.x1y2").mkdir()
        (lib / ".images.faiss.abc123").write_bytes(b"half a file")
        (lib / "images-0123456789abcdef.faiss").write_bytes(b"a data file no index names")
    else:
        sql(lib, "INSERT INTO pending_vectors (id, vector) VALUES (99999, x'00')")
    code, report = check(lib)
    kinds = {"faiss_ids": {"index"}, "faiss_missing": {"index"}, "orphan": {"orphan_text", "index"},
             "leftovers": {"leftover"}, "pending": {"pending"}}[damage]  # fmt: skip
    assert code == 1 and not report["healthy"] and {p["kind"] for p in report["problems"]} == kinds, report
    code, report = check(lib, "--repair")
    assert code == 0 and report["healthy"] and report["repaired"], report
    assert check(lib)[0] == 0
    # User data is untouched (the orphan case loses only the caption of the image deleted above).
    ids = stored(lib, IMAGE)[0]
    assert len(ids) == len(before_ids) - (damage == "orphan")
    assert (kept / "open_clip_config.json").exists()
    assert not list(lib.glob(".*.faiss.*")) and not list((lib / "models").glob(".*"))
    assert len(list(lib.glob("images-*.faiss"))) == 1  # the one images.faiss names
    if damage == "orphan":
        assert len(stored(lib, TEXT)[0]) == 0


def test_bad_vectors_are_reported_never_dropped(lib):
    ids, vecs = stored(lib, IMAGE)
    nan = np.full(vecs.shape[1], np.nan, np.float32).tobytes().hex()
    sql(lib, f"UPDATE items SET vector = x'{nan}' WHERE id = {ids[0]}",
        f"UPDATE items SET vector = x'{(vecs[1] * 2).tobytes().hex()}' WHERE id = {ids[1]}")  # fmt: skip
    code, report = check(lib)
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["vector"]
    assert "2 vectors are not finite unit vectors" in report["problems"][0]["detail"]
    code, report = check(lib, "--repair")
    assert code == 1 and len(stored(lib, IMAGE)[0]) == len(ids)


def test_human_output_and_exit_code(lib):
    _drop_from_faiss(lib, 1)
    res = run("--library", lib, "check")
    assert res.exit_code == 1 and res.stdout.startswith("index: the image index differs")
    assert "check --repair" in res.stderr


def test_the_next_writer_clears_what_a_killed_save_left(lib, tmp_path):
    """A writer killed while saving an index leaves a temporary head, a data file no head names,
    or an on-disk build's work folder. The next writing command (here one that writes texts only)
    removes them, so a resumed run leaves the library as clean as an uninterrupted one."""
    (lib / ".texts.faiss.abc123").write_bytes(b"half a head")
    (lib / "texts-0123456789abcdef.faiss").write_bytes(b"a data file no head names")
    (lib / "images-fedcba9876543210.faiss").write_bytes(b"another")
    (lib / ".images.build-0123abcd").mkdir()
    (lib / ".images.build-0123abcd" / "block_00000.index").write_bytes(b"blocks")
    assert check(lib)[0] == 1
    texts = tmp_path / "t.txt"
    texts.write_text("a new line\n", encoding="utf-8")
    ok("--library", lib, "add-texts", texts, "--quiet")
    code, report = check(lib)
    assert code == 0 and report["healthy"], report
    assert not list(lib.glob(".*"))
    assert len(list(lib.glob("images-*.faiss"))) == len(list(lib.glob("texts-*.faiss"))) == 1
