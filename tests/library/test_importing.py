"""`clipdex import-embeddings`: .npy + csv/jsonl/parquet metadata, normalisation, refusals."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from clipdex import Library

DIM = 64  # the tiny test model's embedding size (tests/conftest.py)


def run(*args: object) -> Result:
    from clipdex.cli.main import cli

    return CliRunner().invoke(cli, [os.fsdecode(a) if isinstance(a, os.PathLike) else str(a) for a in args])


def ok(*args: object) -> Result:
    r = run(*args)
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr, r.exception)
    return r


def refused(*args: object) -> str:
    """Exit 1 with exactly one `Error: …` line on stderr (no traceback); returns that line."""
    r = run(*args)
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    return lines[0]


def vectors(n: int, dim: int = DIM, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Random, deliberately *not* unit-length vectors."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) * rng.uniform(0.5, 3.0, (n, 1))).astype(dtype)


def save_npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def lib_args(tmp_path: Path, tiny_model_dir: Path) -> list:
    return ["--library", tmp_path / "lib"]


@pytest.fixture
def imported(tmp_path: Path, tiny_model_dir: Path, lib_args: list) -> dict:
    """A new library holding 8 imported images (from .npy + csv)."""
    vecs = vectors(8)
    paths = [f"/data/photos/p{i}.jpg" for i in range(8)]
    npy = save_npy(tmp_path / "v.npy", vecs)
    meta = write_csv(tmp_path / "m.csv", ["path", "caption"], [[p, f"cap {i}"] for i, p in enumerate(paths)])
    out = ok(*lib_args, "import-embeddings", npy, meta, "--model", tiny_model_dir, "--json")
    return {"vecs": vecs, "paths": paths, "stdout": out.stdout, "lib": tmp_path / "lib"}


def counts(**kw: int) -> dict:
    """The `import-embeddings --json` object."""
    return {"imported": 0, "updated": 0, "unchanged": 0, "missing_files": 0, **kw}


def count(lib_dir: Path, kind: str = "image") -> int:
    with Library.open(lib_dir) as lib:
        return lib.store.items.count(kind)


# ---- importing ---------------------------------------------------------------------------------
def test_csv_import_then_search_by_an_imported_vector(imported):
    assert imported["stdout"].count("\n") == 1 and json.loads(imported["stdout"]) == counts(
        imported=8, missing_files=8
    )
    with Library.open(imported["lib"]) as lib:
        assert lib.store.dim == DIM and lib.spec is not None  # the model was recorded
        for i in (0, 5):
            hits = lib.search(vector=imported["vecs"][i], k=3)
            assert hits[0].path == imported["paths"][i]
            assert hits[0].score == pytest.approx(1.0, abs=1e-5)
            assert hits[1].score < 0.99
        item = lib.store.items.get([hits[0].id])[hits[0].id]
        assert item.source == "import" and item.kind == "image" and item.path == os.fsencode(hits[0].path)
        ids, stored = lib.store.vectors.all("image")
        assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)  # normalised on the way in
        want = imported["vecs"] / np.linalg.norm(imported["vecs"], axis=1, keepdims=True)
        assert np.allclose(stored, want, atol=1e-6)
        row = lib.store.conn.execute("SELECT mtime_ns, size FROM items WHERE id = ?", (int(ids[0]),))
        assert row.fetchone() == (None, None)
        assert lib.info()["indexes"]["images"]["ntotal"] == 8


def test_second_import_into_an_existing_library_does_not_load_the_model(imported, tmp_path, monkeypatch):
    import clipdex.library.model_slot as model_slot

    def no_model(*a, **kw):
        raise AssertionError("the model must not be loaded for an existing library")

    monkeypatch.setattr(model_slot, "load_model", no_model)
    more = vectors(3, seed=7)
    npy = save_npy(tmp_path / "more.npy", more)
    meta = write_csv(tmp_path / "more.csv", ["path"], [[f"/data/more/{i}.jpg"] for i in range(3)])
    out = ok("--library", imported["lib"], "import-embeddings", npy, meta, "--json")
    assert json.loads(out.stdout) == counts(imported=3, missing_files=3)
    with Library.open(imported["lib"]) as lib:
        assert lib.store.items.count("image") == 11
        assert lib.search(vector=more[2], k=1)[0].path == "/data/more/2.jpg"
        assert lib.search(vector=imported["vecs"][1], k=1)[0].path == imported["paths"][1]


def test_jsonl_caption_alias_imports_texts(tmp_path, tiny_model_dir, lib_args):
    vecs = vectors(5, seed=1)
    npy = save_npy(tmp_path / "t.npy", vecs)
    meta = write_jsonl(tmp_path / "t.jsonl", [{"id": i, "caption": f" text number {i} "} for i in range(5)])
    out = ok(*lib_args, "import-embeddings", npy, meta, "--model", tiny_model_dir, "--json", "--quiet")
    assert json.loads(out.stdout) == counts(imported=5)
    hits = [
        json.loads(line)
        for line in ok(*lib_args, "search", "x", "--target", "texts", "--json").stdout.splitlines()
    ]
    assert sorted(h["text"] for h in hits) == [f"text number {i}" for i in range(5)]
    with Library.open(tmp_path / "lib") as lib:
        assert lib.store.items.count("image") == 0
        top = lib.search(vector=vecs[3], k=1, target="texts")[0]
        assert top.text == "text number 3" and top.path is None and top.score == pytest.approx(1, abs=1e-5)


def test_parquet_image_path_alias_float16_and_relative_paths(tmp_path, tiny_model_dir, lib_args, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    vecs = vectors(6, seed=2, dtype=np.float16)
    npy = save_npy(tmp_path / "h.npy", vecs)
    meta = tmp_path / "m.parquet"
    names = [f"sub/img{i}.jpg" for i in range(6)]
    pq.write_table(pa.table({"image_path": names, "caption": ["c"] * 6}), meta)
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "sub" / "img1.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the cwd does not matter: relative to the metadata's folder
    out = ok(*lib_args, "import-embeddings", npy, meta, "--model", tiny_model_dir, "--json")
    assert json.loads(out.stdout) == counts(imported=6, missing_files=5)  # only sub/img1.jpg exists
    with Library.open(tmp_path / "lib") as lib:
        top = lib.search(vector=vecs[4].astype(np.float32), k=1)[0]
        assert top.path == str(tmp_path / "sub" / "img4.jpg")
        assert top.score == pytest.approx(1.0, abs=1e-5)


def test_modality_text_picks_the_text_column_when_paths_exist_too(tmp_path, tiny_model_dir, lib_args):
    npy = save_npy(tmp_path / "v.npy", vectors(2))
    meta = write_csv(tmp_path / "m.csv", ["path", "text"], [["/a.jpg", "first"], ["/b.jpg", "second"]])
    ok(*lib_args, "import-embeddings", npy, meta, "--modality", "text", "--model", tiny_model_dir)
    assert count(tmp_path / "lib", "text") == 2 and count(tmp_path / "lib", "image") == 0


def test_index_never_removes_imported_items(imported, tmp_path, tiny_model_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(folder / "red.png")
    # Imported paths inside the indexed folder that do not exist there: still kept.
    npy = save_npy(tmp_path / "in.npy", vectors(2, seed=3))
    meta = write_csv(
        tmp_path / "in.csv", ["path"], [[str(folder / "gone1.jpg")], [str(folder / "gone2.jpg")]]
    )
    ok("--library", imported["lib"], "import-embeddings", npy, meta)
    out = ok("--library", imported["lib"], "index", folder, "--json")
    assert json.loads(out.stdout)["added"] == 1 and json.loads(out.stdout)["removed"] == 0
    (folder / "red.png").unlink()
    out = ok("--library", imported["lib"], "index", folder, "--json")
    assert json.loads(out.stdout)["removed"] == 1
    assert count(imported["lib"]) == 10
    with Library.open(imported["lib"]) as lib:
        assert lib.search(vector=imported["vecs"][7], k=1)[0].path == imported["paths"][7]


# ---- refusals ------------------------------------------------------------------------------------
def test_wrong_dimension_is_refused(imported, tmp_path):
    npy = save_npy(tmp_path / "w.npy", vectors(2, dim=32))
    meta = write_csv(tmp_path / "w.csv", ["path"], [["/x"], ["/y"]])
    line = refused("--library", imported["lib"], "import-embeddings", npy, meta)
    assert "32" in line and "64" in line
    assert count(imported["lib"]) == 8


def test_wrong_dimension_for_a_new_library(tmp_path, tiny_model_dir, lib_args):
    npy = save_npy(tmp_path / "w.npy", vectors(2, dim=512))
    meta = write_csv(tmp_path / "w.csv", ["path"], [["/x"], ["/y"]])
    line = refused(*lib_args, "import-embeddings", npy, meta, "--model", tiny_model_dir)
    assert "512" in line and "64" in line


def test_row_count_mismatch_is_refused(imported, tmp_path):
    npy = save_npy(tmp_path / "r.npy", vectors(3))
    meta = write_csv(tmp_path / "r.csv", ["path"], [["/x"], ["/y"]])
    line = refused("--library", imported["lib"], "import-embeddings", npy, meta)
    assert "3 rows" in line and "2" in line
    assert count(imported["lib"]) == 8


@pytest.mark.parametrize(
    "bad, word", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (0.0, "zero vector")]
)
def test_bad_rows_are_refused_naming_the_row(imported, tmp_path, bad, word):
    vecs = vectors(5)
    if bad == 0.0:
        vecs[3] = 0.0
    else:
        vecs[3, 7] = bad
    npy = save_npy(tmp_path / "bad.npy", vecs)
    meta = write_csv(tmp_path / "bad.csv", ["path"], [[f"/p{i}"] for i in range(5)])
    line = refused("--library", imported["lib"], "import-embeddings", npy, meta)
    assert "row 3" in line and word in line and "bad.npy" in line
    assert count(imported["lib"]) == 8


def test_missing_column_names_the_columns_found(imported, tmp_path):
    npy = save_npy(tmp_path / "c.npy", vectors(2))
    meta = write_csv(tmp_path / "c.csv", ["url", "width"], [["http://a", "1"], ["http://b", "2"]])
    line = refused("--library", imported["lib"], "import-embeddings", npy, meta)
    assert "'path'" in line and "url, width" in line
    meta2 = write_csv(tmp_path / "d.csv", ["text"], [["a"], ["b"]])
    line = refused("--library", imported["lib"], "import-embeddings", npy, meta2, "--modality", "image")
    assert "'image_path'" in line and "found: text" in line


@pytest.mark.parametrize(
    "arr, word",
    [
        (np.ones(DIM, np.float32), "2-D"),
        (np.ones((2, 2, DIM), np.float32), "2-D"),
        (np.ones((2, DIM), np.int32), "int32"),
    ],
)
def test_bad_arrays_are_refused(imported, tmp_path, arr, word):
    npy = save_npy(tmp_path / "a.npy", arr)
    meta = write_csv(tmp_path / "a.csv", ["path"], [["/x"], ["/y"]])
    assert word in refused("--library", imported["lib"], "import-embeddings", npy, meta)


def test_empty_path_and_unknown_format_are_refused(imported, tmp_path):
    npy = save_npy(tmp_path / "e.npy", vectors(3))
    meta = write_csv(tmp_path / "e.csv", ["path"], [["/x"], [""], ["/z"]])
    assert "row 1" in refused("--library", imported["lib"], "import-embeddings", npy, meta)
    other = tmp_path / "e.xlsx"
    other.write_text("nope")
    assert ".parquet" in refused("--library", imported["lib"], "import-embeddings", npy, other)
    junk = tmp_path / "junk.npy"
    junk.write_text("not an array")
    assert "junk.npy" in refused("--library", imported["lib"], "import-embeddings", junk, meta)


def test_another_model_is_refused(imported, tmp_path, tiny_model_dir2):
    npy = save_npy(tmp_path / "v.npy", vectors(1))
    meta = write_csv(tmp_path / "v.csv", ["path"], [["/x"]])
    assert "model" in refused(
        "--library", imported["lib"], "import-embeddings", npy, meta, "--model", tiny_model_dir2
    )


def test_a_failure_halfway_undoes_the_whole_import(imported, tmp_path, monkeypatch):
    from clipdex.index.store.items import ItemsTable
    from clipdex.inputs import embeddings as vector_files

    monkeypatch.setattr(vector_files, "CHUNK", 4)
    real = ItemsTable.insert_many
    calls = []

    def flaky(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(self, *a, **kw)

    monkeypatch.setattr(ItemsTable, "insert_many", flaky)
    npy = save_npy(tmp_path / "big.npy", vectors(10, seed=9))
    meta = write_csv(tmp_path / "big.csv", ["path"], [[f"/big/{i}"] for i in range(10)])
    r = run("--library", imported["lib"], "import-embeddings", npy, meta)
    assert r.exit_code == 1 and "disk full" in r.stderr
    monkeypatch.setattr(ItemsTable, "insert_many", real)
    assert count(imported["lib"]) == 8
    with Library.open(imported["lib"]) as lib:
        assert lib.info()["indexes"]["images"]["ntotal"] == 8
        assert lib.search(vector=imported["vecs"][2], k=1)[0].path == imported["paths"][2]


# ---- idempotence -------------------------------------------------------------------------------
def test_reimport_adds_nothing_and_a_changed_vector_updates_in_place(imported, tmp_path):
    lib = imported["lib"]
    again = ok("--library", lib, "import-embeddings", tmp_path / "v.npy", tmp_path / "m.csv", "--json")
    assert json.loads(again.stdout) == counts(unchanged=8, missing_files=8)
    with Library.open(lib) as opened:
        ids_before = {os.fsdecode(p): rec.id for p, rec in opened.store.items.image_files().items()}
    assert len(ids_before) == 8 and count(lib) == 8

    # Row 2 changed, a new path, and a path repeated within the file (the first row counts).
    vecs = imported["vecs"].copy()
    vecs[2] = vectors(1, seed=42)[0]
    extra = vectors(2, seed=43)
    npy = save_npy(tmp_path / "v2.npy", np.concatenate([vecs, extra]))
    paths = imported["paths"] + ["/data/photos/new.jpg", "/data/photos/new.jpg"]
    meta = write_csv(tmp_path / "m2.csv", ["path"], [[p] for p in paths])
    out = ok("--library", lib, "import-embeddings", npy, meta, "--json")
    assert json.loads(out.stdout) == counts(imported=1, updated=1, unchanged=8, missing_files=10)
    with Library.open(lib) as opened:
        assert opened.store.items.count("image") == 9
        ids = {os.fsdecode(p): rec.id for p, rec in opened.store.items.image_files().items()}
        assert {p: ids[p] for p in ids_before} == ids_before  # same ids, the updated one too
        hit = opened.search(vector=vecs[2], k=2)
        assert hit[0].id == ids_before[imported["paths"][2]] and hit[0].score == pytest.approx(1, abs=1e-5)
        assert hit[1].score < 0.99  # the old vector is gone from the index
        assert opened.search(vector=extra[0], k=1)[0].path == "/data/photos/new.jpg"
        assert opened.info()["indexes"]["images"]["ntotal"] == 9


def test_reimporting_texts_and_re_adding_texts_is_idempotent(tmp_path, tiny_model_dir, lib_args):
    npy = save_npy(tmp_path / "t.npy", vectors(3))
    meta = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in ("one", "two", "three")])
    ok(*lib_args, "import-embeddings", npy, meta, "--model", tiny_model_dir)
    out = ok(*lib_args, "import-embeddings", npy, meta, "--json")
    assert json.loads(out.stdout) == counts(unchanged=3)
    (tmp_path / "more.txt").write_text("two\nfour\nfive\nfour\n\n")  # "two" is stored; "four" twice
    first = ok(*lib_args, "add-texts", tmp_path / "more.txt", "--json")
    assert json.loads(first.stdout) == {"added": 2, "unchanged": 2}
    second = ok(*lib_args, "add-texts", tmp_path / "more.txt", "--json")
    assert json.loads(second.stdout) == {"added": 0, "unchanged": 4}
    with Library.open(tmp_path / "lib") as lib:
        texts = sorted(t for _, _, t in lib.store.items.iter("text"))
        assert texts == ["five", "four", "one", "three", "two"]
        assert lib.info()["indexes"]["texts"]["ntotal"] == 5


def test_a_scanned_file_adopts_the_imported_item_at_its_path(tmp_path, tiny_model_dir, lib_args):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (16, 16), (200, 10, 10) if name == "a.png" else (10, 10, 200)).save(imgs / name)
    npy = save_npy(tmp_path / "v.npy", vectors(1))
    meta = write_csv(imgs / "m.csv", ["path"], [["a.png"]])  # relative to the metadata's folder
    out = ok(*lib_args, "import-embeddings", npy, meta, "--model", tiny_model_dir, "--json")
    assert json.loads(out.stdout) == counts(imported=1)
    with Library.open(tmp_path / "lib") as lib:
        (imported_id,) = [rec.id for rec in lib.store.items.image_files().values()]
    res = json.loads(ok(*lib_args, "index", imgs, "--json").stdout)
    assert (res["added"], res["updated"]) == (1, 1)
    with Library.open(tmp_path / "lib") as lib:
        files = lib.store.items.image_files()
        assert len(files) == 2 and files[os.fsencode(imgs / "a.png")].id == imported_id
        assert files[os.fsencode(imgs / "a.png")].source == "scan"
        hit = lib.search(image=imgs / "a.png", k=1)[0]  # the new (model-made) vector replaced the import
        assert hit.id == imported_id and hit.score == pytest.approx(1, abs=1e-4)


def test_a_failure_halfway_undoes_updates_too(imported, tmp_path, monkeypatch):
    from clipdex.index.store.items import ItemsTable
    from clipdex.inputs import embeddings as vector_files

    monkeypatch.setattr(vector_files, "CHUNK", 4)
    vecs = imported["vecs"].copy()
    vecs[1] = vectors(1, seed=50)[0]  # an update in the first chunk
    npy = save_npy(tmp_path / "u.npy", np.concatenate([vecs, vectors(2, seed=51)]))
    meta = write_csv(tmp_path / "u.csv", ["path"], [[p] for p in imported["paths"] + ["/n/1", "/n/2"]])
    real = ItemsTable.insert_many

    def full(self, *a, **kw):
        raise OSError(28, "No space left on device", "clipdex.db")

    monkeypatch.setattr(ItemsTable, "insert_many", full)  # the third chunk's new rows
    r = run("--library", imported["lib"], "import-embeddings", npy, meta)
    assert r.exit_code == 1 and "disk full" in r.stderr
    monkeypatch.setattr(ItemsTable, "insert_many", real)
    with Library.open(imported["lib"]) as lib:
        assert lib.store.items.count("image") == 8
        hit = lib.search(vector=imported["vecs"][1], k=1)[0]  # the old vector is back in place
        assert hit.path == imported["paths"][1] and hit.score == pytest.approx(1, abs=1e-5)
