"""Large-library mode: float16 vector files in LIBRARY/vectors/ and the ivf-pq-ondisk index.

A 50k-row shard folder of clustered 64-d vectors is imported once (module fixture); tests that
change a library work on a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.corehelp import brute_force, make_images, ok, run, stored

from clipdex import Library
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE

DIM, N, SHARD = 64, 50_000, 20_000
ONDISK = "ivf-pq-ondisk"


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((500, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 500, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(x: np.ndarray, seed: int) -> np.ndarray:
    """Queries near the data, not on it: stored vectors moved by noise of norm 0.5."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    q = x + 0.5 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def shard_dir(root: Path, x: np.ndarray, shard: int = SHARD) -> Path:
    for sub in ("img_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(range(0, len(x), shard)):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", x[s : s + shard].astype(np.float16))
        paths = [f"/photos/{j}.jpg" for j in range(s, min(len(x), s + shard))]
        pq.write_table(pa.table({"image_path": paths}), root / "metadata" / f"metadata_{i}.parquet")
    return root


def info(lib: Path) -> dict:
    return json.loads(ok("--library", lib, "info", "--json").stdout)


def check(lib: Path, *args: str) -> tuple[int, dict]:
    r = run("--library", lib, "check", "--json", *args)
    return r.exit_code, json.loads(r.stdout)


def blob_rows(lib: Path) -> int:
    store = Store(lib)
    try:
        return store.conn.execute("SELECT count(*) FROM items WHERE vector IS NOT NULL").fetchone()[0]
    finally:
        store.close()


def top(lib_or_path, q: np.ndarray, k: int = 10) -> list[tuple[int, float]]:
    if isinstance(lib_or_path, Library):
        return [(h.id, h.score) for h in lib_or_path.search(vector=q, k=k)]
    with Library.open(lib_or_path) as lib:
        return [(h.id, h.score) for h in lib.search(vector=q, k=k)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> np.ndarray:
    return clustered(N, seed=0)


@pytest.fixture(scope="module")
def large(tmp_path_factory, tiny_model_dir, data) -> Path:
    """A library imported from a 50k-row shard folder with --index-type ivf-pq-ondisk."""
    root = tmp_path_factory.mktemp("ondisk")
    shards = shard_dir(root / "emb", data)
    lib = root / "lib"
    r = ok("--library", lib, "import-embeddings", shards, "--model", tiny_model_dir,
           "--index-type", "ivf-pq-ondisk", "--json", "--quiet")  # fmt: skip
    assert json.loads(r.stdout) == {"imported": N, "updated": 0, "unchanged": 0, "missing_files": N}
    return lib


@pytest.fixture
def copy(large, tmp_path) -> Path:
    dst = tmp_path / "lib"
    shutil.copytree(large, dst)
    return dst


def test_answers_like_a_flat_index_with_float16_cosines(large, data):
    ids, vecs = stored(large, IMAGE)
    # The stored vectors are the shards' float16 rows, renormalised: scores are their cosines.
    half = data.astype(np.float16).astype(np.float32)
    assert np.abs(vecs - half / np.linalg.norm(half, axis=1, keepdims=True)).max() < 1e-6
    queries = near(data[np.random.default_rng(1).choice(N, 100, replace=False)], seed=2)
    recalls = []
    with Library.open(large) as lib:
        for q in queries:
            got = top(lib, q)
            want = brute_force(ids, vecs, q, 10)
            recalls.append(len({i for i, _ in got} & {i for i, _ in want}) / 10)
            exact = dict(brute_force(ids, vecs, q, N))
            assert all(abs(s - exact[i]) < 1e-6 for i, s in got)  # re-ranked exactly
            assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    assert np.mean(recalls) >= 0.95, np.mean(recalls)

    about = info(large)
    image_index = about["indexes"]["images"]
    assert about["mode"] == "large-library" and image_index["type"] == "ivf-pq-ondisk"
    assert image_index["ntotal"] == N and image_index["bytes_per_vector"] < 20  # RAM: no vectors
    assert image_index["vector_bytes_per_vector_on_disk"] == 2 * DIM
    user_shards = [large.parent / "emb" / "img_emb" / f"img_emb_{i}.npy" for i in range(3)]
    assert about["vector_files"] == {"count": 3, "bytes": sum(p.stat().st_size for p in user_shards)}
    assert blob_rows(large) == 0  # SQLite keeps metadata and ids, no vectors
    assert all(p.stat().st_nlink == 2 for p in user_shards)  # hard-linked, not moved: the user's stay
    assert check(large) == (0, {"healthy": True, "problems": [], "repaired": []})


def test_reimport_is_unchanged_and_an_update_moves_the_item(copy, large, tmp_path, data):
    r = ok("--library", copy, "import-embeddings", large.parent / "emb", "--json", "--quiet")
    assert json.loads(r.stdout) == {"imported": 0, "updated": 0, "unchanged": N, "missing_files": N}
    assert info(copy)["vector_files"]["count"] == 3  # the unchanged shards' new links were dropped
    # A changed vector for a known path: the same id, found by its new vector, not by its old one.
    new = clustered(1, seed=9)
    np.save(tmp_path / "v.npy", new)
    (tmp_path / "m.csv").write_text("path\n/photos/5.jpg\n")
    r = ok("--library", copy, "import-embeddings", tmp_path / "v.npy", tmp_path / "m.csv", "--json")
    assert json.loads(r.stdout)["updated"] == 1
    item = dict(Store(copy).conn.execute("SELECT path, id FROM items WHERE path = ?", (b"/photos/5.jpg",)))
    got = top(copy, new[0], 3)
    assert got[0][0] == item[b"/photos/5.jpg"] and got[0][1] > 0.999
    assert all(i != item[b"/photos/5.jpg"] for i, _ in top(copy, data[5], 3))
    assert check(copy)[0] == 0


def test_survives_add_and_remove_also_for_a_reader(copy, tmp_path, tiny_model_dir):
    reader = Library.open(copy)  # opened before the writes: catches up from the change log
    assert reader.count() == N
    imgs = make_images(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    files_before = info(copy)["vector_files"]["count"]
    r = ok("--library", copy, "index", tmp_path / "imgs", "--json", "--quiet")
    assert json.loads(r.stdout)["added"] == 3
    assert info(copy)["vector_files"]["count"] == files_before + 1 and blob_rows(copy) == 0
    with Library.open(copy) as lib:
        vec = {n: lib.store.vectors.get([lib.resolve_item(str(p))])[0] for n, p in imgs.items()}
        ident = {n: lib.resolve_item(str(p)) for n, p in imgs.items()}
    for lib in (copy, reader):
        for n in ("a.png", "b.png", "c.png"):
            assert top(lib, vec[n], 1)[0][0] == ident[n]

    # A removal of an item added since the build (in the in-memory part of the index).
    imgs["b.png"].unlink()
    assert json.loads(ok("--library", copy, "index", tmp_path / "imgs", "--json").stdout)["removed"] == 1
    for lib in (copy, reader):
        assert ident["b.png"] not in [i for i, _ in top(lib, vec["b.png"], 20)]
        assert top(lib, vec["a.png"], 1)[0][0] == ident["a.png"]

    # Rebuilt, a.png and c.png are in the mapped lists; removing a.png there leaves a tombstone.
    with Library.open(copy) as lib, lib.writing():
        lib.indexes.rebuild(IMAGE)
    imgs["a.png"].unlink()
    assert json.loads(ok("--library", copy, "index", tmp_path / "imgs", "--json").stdout)["removed"] == 1
    fresh = Library.open(copy)
    for lib in (reader, fresh):
        assert ident["a.png"] not in [i for i, _ in top(lib, vec["a.png"], 20)]
        assert top(lib, vec["c.png"], 1)[0][0] == ident["c.png"]
        assert lib.count() == N + 1
        # Sharper: re-rank as if the removed item still held the query's vector; it must still
        # not come back (its code is still in the mapped lists: only the tombstone hides it).
        q = vec["a.png"]

        def oracle(ids, lib=lib, q=q):
            return np.where(np.isin(ids, [ident["a.png"]])[:, None], q, lib.store.vectors.get(ids))

        hits = lib.indexes.view(IMAGE).search(q[None], 5, oracle)[0]
        assert ident["a.png"] not in [i for i, _ in hits]
    reader.close()
    fresh.close()
    assert check(copy)[0] == 0


def test_check_repair_rebuilds_the_index_files_from_the_vector_files(copy, data):
    queries = near(data[:20], seed=5)
    before = [top(copy, q) for q in queries]
    ivfdata = next(copy.glob("images.*.ivfdata"))
    ivfdata.unlink()
    code, report = check(copy)
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["index"]
    with Library.open(copy, warn=lambda m: None) as lib:  # exact from the vector files meanwhile
        assert [[i for i, _ in top(lib, q)] for q in queries[:3]] == [
            [i for i, _ in brute_force(*stored(copy, IMAGE), q, 10)] for q in queries[:3]
        ]
    code, report = check(copy, "--repair")
    assert code == 0 and report["repaired"] == ["rebuilt the FAISS indexes"]
    rebuilt = next(copy.glob("images.*.ivfdata"))
    assert rebuilt.name != ivfdata.name  # a new file, never the old one rewritten
    after = [top(copy, q) for q in queries]
    overlap = np.mean([len({i for i, _ in a} & {i for i, _ in b}) / 10 for a, b in zip(before, after)])
    assert overlap >= 0.95

    with open(rebuilt, "r+b") as f:  # damaged: cut short
        f.truncate(rebuilt.stat().st_size // 2)
    assert check(copy)[0] == 1
    assert check(copy, "--repair")[0] == 0
    assert len(list(copy.glob("images.*.ivfdata"))) == 1 and len(list(copy.glob("images.*.ids.npy"))) == 1

    (copy / "vectors" / "stray.npy").write_bytes(b"left by a crash")
    code, report = check(copy)
    assert code == 1 and report["problems"][0]["kind"] == "orphan_vector_file"
    assert check(copy, "--repair")[0] == 0 and not (copy / "vectors" / "stray.npy").exists()


def test_a_missing_vector_file_is_reported_as_lost_items(copy):
    store = Store(copy)
    name, fid = store.conn.execute("SELECT name, id FROM vector_files ORDER BY id LIMIT 1").fetchone()
    lost = store.conn.execute("SELECT count(*) FROM items WHERE vfile = ?", (fid,)).fetchone()[0]
    store.close()
    assert lost == SHARD
    (copy / "vectors" / name).unlink()
    code, report = check(copy)
    assert code == 1
    problem = next(p for p in report["problems"] if p["kind"] == "vector_file")
    assert all(word in problem["detail"] for word in (name, f"{SHARD} items", "--reembed"))
    code, report = check(copy, "--repair")
    assert code == 1 and any("vector_file" == p["kind"] for p in report["problems"])
    r = run("--library", copy, "similar", "1")  # item 1's vector was in that file: one clear line
    assert r.exit_code == 1
    assert r.stderr.startswith(f"Error: vector file {copy / 'vectors' / name} is missing")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_auto_selection_past_the_memory_budget(tmp_path, tiny_model_dir, monkeypatch):
    x = clustered(3000, seed=3)
    np.save(tmp_path / "v.npy", x[:2000].astype(np.float16))
    (tmp_path / "m.csv").write_text("path\n" + "".join(f"/p/{i}.jpg\n" for i in range(2000)))
    np.save(tmp_path / "v2.npy", x[2000:])
    (tmp_path / "m2.csv").write_text("path\n" + "".join(f"/p/{i}.jpg\n" for i in range(2000, 3000)))

    # A normal library is unchanged: blobs in SQLite, an in-memory index, no vectors/ folder.
    normal = tmp_path / "normal"
    first = (tmp_path / "v.npy", tmp_path / "m.csv")
    ok("--library", normal, "import-embeddings", *first, "--model", tiny_model_dir)
    about = info(normal)
    assert about["mode"] == "normal" and about["indexes"]["images"]["type"] == "flat"
    assert blob_rows(normal) == 2000 and not (normal / "vectors").exists()

    # Past the (injected) budget: 3000 x 64 float32 = 768 kB > 500 kB. The library switches when
    # it grows past it; the vectors already stored move into vector files, ids unchanged.
    monkeypatch.setenv("CLIPDEX_MEMORY_BUDGET", "500000")
    ids_before, vecs_before = stored(normal, IMAGE)
    ok("--library", normal, "import-embeddings", tmp_path / "v2.npy", tmp_path / "m2.csv")
    about = info(normal)
    assert about["mode"] == "large-library" and about["indexes"]["images"]["type"] == "ivf-pq-ondisk"
    assert blob_rows(normal) == 0 and about["images"] == 3000
    ids, vecs = stored(normal, IMAGE)
    assert np.array_equal(ids[:2000], ids_before) and np.abs(vecs[:2000] - vecs_before).max() < 1e-3
    q = near(x[:5], seed=4)
    for qq in q:
        assert [i for i, _ in top(normal, qq, 5)] == [i for i, _ in brute_force(ids, vecs, qq, 5)]
    assert check(normal)[0] == 0

    # A new library past the budget goes straight to large-library mode.
    fresh = tmp_path / "fresh"
    ok("--library", fresh, "import-embeddings", *first, "--model", tiny_model_dir,
       env={"CLIPDEX_MEMORY_BUDGET": "100000"})  # fmt: skip
    assert info(fresh)["mode"] == "large-library" and blob_rows(fresh) == 0
    assert os.path.samefile(tmp_path / "v.npy", next((fresh / "vectors").iterdir()))


def test_a_moved_library_maps_its_own_index_files(copy, tmp_path, data):
    def lists_file(lib: Path) -> Path:
        import faiss

        with Library.open(lib) as opened:
            assert top(opened, data[7], 1)[0][0] == 8  # ids follow the import order
            ann = opened.indexes.view(IMAGE).ann
            return Path(faiss.downcast_InvertedLists(faiss.extract_index_ivf(ann.index).invlists).filename)

    moved = copy.rename(tmp_path / "moved")
    assert lists_file(moved).parent == moved
    np.save(tmp_path / "one.npy", clustered(1, seed=11))  # a write: the small file is saved again
    (tmp_path / "one.csv").write_text("path\n/photos/new.jpg\n")
    ok("--library", moved, "import-embeddings", tmp_path / "one.npy", tmp_path / "one.csv", "--quiet")
    again = moved.rename(tmp_path / "again")
    assert lists_file(again).parent == again


@pytest.mark.ray
def test_import_with_ray_fills_the_blocks_in_ray_tasks(tmp_path, tiny_model_dir, monkeypatch):
    from clipdex.index.faiss import ondisk_build

    monkeypatch.setattr(ondisk_build, "BLOCK", 6000)  # 20k vectors: four blocks, four tasks
    x = clustered(20_000, seed=21)
    shards = shard_dir(tmp_path / "emb", x, shard=10_000)
    args = ("import-embeddings", shards, "--model", tiny_model_dir, "--index-type", ONDISK, "--quiet")
    ok("--library", tmp_path / "here", *args)
    # In a child process: Ray Data cannot run in a process that started and shut down Ray before
    # (ray-project/ray#54841), and tests/scale/test_ray_job.py runs Ray Data in this one later.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    child = (  # the same blocks
        "import sys; from clipdex.index.faiss import ondisk_build; ondisk_build.BLOCK = 6000; "
        "from clipdex.cli.main import cli; cli(sys.argv[1:])"
    )
    argv = [sys.executable, "-c", child, "--library", str(tmp_path / "ray"), *map(str, args), "--ray"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    index = info(tmp_path / "ray")["indexes"]["images"]
    assert index["filled_by"] == {"how": "ray", "blocks": 4} and index["ntotal"] == 20_000
    assert info(tmp_path / "here")["indexes"]["images"]["filled_by"] == {"how": "in-process", "blocks": 4}
    # The same blocks, filled elsewhere: the same index, the same answers.
    with Library.open(tmp_path / "here") as here, Library.open(tmp_path / "ray") as there:
        for q in near(x[:20], seed=22):
            assert top(here, q) == top(there, q)
    assert check(tmp_path / "ray")[0] == 0


def test_a_linked_shard_rewritten_in_place_is_reported(tmp_path, tiny_model_dir):
    x = clustered(2000, seed=31)
    shards = shard_dir(tmp_path / "emb", x, shard=1000)
    lib = tmp_path / "lib"
    ok("--library", lib, "import-embeddings", shards, "--model", tiny_model_dir, "--index-type", ONDISK)
    assert check(lib)[0] == 0
    user = shards / "img_emb" / "img_emb_1.npy"
    assert user.stat().st_nlink == 2
    np.save(user, clustered(1000, seed=32).astype(np.float16))  # np.save writes into the same file
    code, report = check(lib)
    assert code == 1 and report["problems"][0]["kind"] == "vector_file"
    assert "changed since it was stored" in report["problems"][0]["detail"]
    assert "1000 items" in report["problems"][0]["detail"]


def test_a_float32_shard_far_from_unit_norm_is_stored_as_its_unit_rows(tmp_path, tiny_model_dir):
    # Rows scaled by 1e6 have components past float16's 65504 (inf when cast as they are), rows
    # scaled by 1e-9 have components below its smallest subnormal (zero when cast as they are):
    # the copy into vectors/ normalises each row before the float16 cast.
    unit = clustered(2000, seed=41)
    scale = np.where(np.arange(2000) < 1000, 1e6, 1e-9).astype(np.float32)[:, None]
    assert np.abs(unit[:1000] * 1e6).max() > 65504 and np.abs(unit[1000:] * 1e-9).max() < 6e-8
    np.save(tmp_path / "v.npy", unit * scale)
    (tmp_path / "m.csv").write_text("path\n" + "".join(f"/p/{i}.jpg\n" for i in range(2000)))
    lib = tmp_path / "lib"
    ok("--library", lib, "import-embeddings", tmp_path / "v.npy", tmp_path / "m.csv",
       "--model", tiny_model_dir, "--index-type", ONDISK, "--quiet")  # fmt: skip
    assert info(lib)["mode"] == "large-library"
    ids, vecs = stored(lib, IMAGE)
    assert np.array_equal(ids, np.arange(1, 2001)) and np.abs(vecs - unit).max() < 2e-3
    with Library.open(lib) as opened:
        for row in (3, 1500):  # one of each scale
            hits = top(opened, unit[row], 10)
            assert hits[0][0] == row + 1
            for i, score in hits:  # the cosines of the unit rows (float16-rounded), never NaN
                assert abs(score - float(unit[i - 1] @ unit[row])) < 2e-3
    assert check(lib)[0] == 0
