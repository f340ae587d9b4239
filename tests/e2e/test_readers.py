"""Readers never write: catch-up from the change log, exact fallback, read-only and damaged libraries."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import (
    assert_one_error_line,
    brute_force,
    indexed_sample,
    json_lines,
    ok,
    run,
    stored,
)

import clipdex.index.store.schema as schema_module
from clipdex import Library
from clipdex.index.faiss.vector_index import VectorIndex
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE


@pytest.fixture(scope="module")
def base_lib(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return indexed_sample(tmp_path_factory.mktemp("readers"), tiny_model_dir, 8, seed=3)


@pytest.fixture
def lib(base_lib: Path, tmp_path: Path) -> Path:
    shutil.copytree(base_lib, tmp_path / "lib")
    return tmp_path / "lib"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's (size, mtime_ns): a reader must leave all of them as they were. (SQLite's own
    WAL side files are its readers' coordination, created empty when missing, not library data.)"""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}  # fmt: skip


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def other_writer(lib: Path, rng: np.random.Generator, n_add: int = 5, delete: int = 2) -> None:
    """What another process's `index` does between two FAISS saves: commits, files not saved."""
    store = Store(lib, write=True)
    try:
        ids, _ = store.vectors.all(IMAGE)
        store.items.insert_many(
            IMAGE, "import", unit(rng, n_add, store.dim), paths=[b"/new/%d" % i for i in range(n_add)]
        )
        store.items.delete(ids[:delete].tolist())
    finally:
        store.close()


def search_matches_sqlite(lib_dir: Path, query: np.ndarray, k: int = 20) -> list[tuple[int, float]]:
    ids, vecs = stored(lib_dir, IMAGE)
    return brute_force(ids, vecs, query, k)


def assert_same(hits, reference: list[tuple[int, float]]) -> None:
    assert [h.id for h in hits] == [i for i, _ in reference]
    assert [h.score for h in hits] == pytest.approx([s for _, s in reference], abs=1e-6)


def test_search_catches_up_from_the_log_and_writes_nothing(lib):
    rng = np.random.default_rng(1)
    faiss_before = (lib / "images.faiss").read_bytes()
    other_writer(lib, rng)
    before = snapshot(lib)
    query = unit(rng, 1, 64)[0]
    with Library.open(lib) as library:
        hits = library.search(vector=query, k=20)
        info = library.info()
    assert_same(hits, search_matches_sqlite(lib, query))
    assert info["indexes"]["images"]["ntotal"] == info["images"] == 11
    assert snapshot(lib) == before and (lib / "images.faiss").read_bytes() == faiss_before
    # The CLI reader too: no warning (the log covers the file), nothing written.
    res = ok("--library", lib, "search", "anything", "--json")
    assert res.stderr == "" and len(json_lines(res.stdout)) == 10
    ok("--library", lib, "info")
    assert snapshot(lib) == before


@pytest.mark.parametrize("damage", ["missing", "damaged", "data_missing", "data_damaged", "pruned"])
def test_unusable_file_searches_exactly_with_one_warning(lib, damage):
    rng = np.random.default_rng(2)
    other_writer(lib, rng)
    data = lib / VectorIndex.read_header(lib / "images.faiss")["data"]
    if damage == "missing":
        (lib / "images.faiss").unlink()
    elif damage == "damaged":
        (lib / "images.faiss").write_bytes(b"CLIPDEX-FAISS-3\n" + b"\0" * 100)
    elif damage == "data_missing":
        data.unlink()
    elif damage == "data_damaged":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    else:  # a writer pruned the log past the file's generation
        store = Store(lib, write=True)
        store.changes.prune(IMAGE, store.generation)
        store.close()
    before = snapshot(lib)
    query = unit(rng, 1, 64)[0]
    warnings: list[str] = []
    with Library.open(lib, warn=warnings.append) as library:
        hits = library.search(vector=query, k=20)
        library.search(vector=query, k=3)
    assert_same(hits, search_matches_sqlite(lib, query))
    assert len(warnings) == 1 and "searching exactly" in warnings[0], warnings
    res = ok("--library", lib, "search", "x", "--json")
    assert len(json_lines(res.stdout)) == 10
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("clipdex: warning: the image index")
    assert snapshot(lib) == before
    # The next writer (even one that only adds texts) rebuilds it; then no more warnings.
    ok("--library", lib, "add-texts", _texts(lib.parent), "--quiet")
    res = ok("--library", lib, "search", "x", "--json")
    assert res.stderr == "" and len(json_lines(res.stdout)) == 10


def _texts(folder: Path) -> Path:
    path = folder / "t.txt"
    path.write_text("one\ntwo\n")
    return path


def test_long_lived_library_sees_other_processes_cheaply(lib, tiny_model_dir, tiny_model_dir2):
    rng = np.random.default_rng(3)
    query = unit(rng, 1, 64)[0]
    with Library.open(lib) as library:
        library.search(vector=query, k=5)
        statements: list[str] = []
        library.store.conn.set_trace_callback(statements.append)
        library.search(vector=query, k=5)
        assert not any("count(" in s.lower() for s in statements), statements
        assert len([s for s in statements if "generation" in s]) == 1, statements
        for _ in range(3):  # several rounds of another process's commits
            other_writer(lib, rng, n_add=3, delete=1)
            hits = library.search(vector=query, k=20)
            assert_same(hits, search_matches_sqlite(lib, query))
            # the count serve reports comes from the same caught-up view, and agrees with SQLite
            with sqlite3.connect(lib / "clipdex.db") as con:
                (images,) = con.execute("SELECT count(*) FROM items WHERE kind = 'image'").fetchone()
            assert library.count("images") == images
        # Another process switches the model: the next text search uses the new one.
        first = library.search(text="a red square", k=3)
        assert str(tiny_model_dir) in library.model.spec.name
        # (the imported items have no file to re-embed from: dropped, as asked)
        ok("--library", lib, "use-model", tiny_model_dir2, "--drop-unembeddable", "--quiet")
        hits = library.search(text="a red square", k=20)
        assert str(tiny_model_dir2) in library.model.spec.name
        from clipdex.retrieval.embed import encode_texts

        q2 = encode_texts(library.model, ["a red square"])[0]
        assert_same(hits, search_matches_sqlite(lib, q2))
        assert first  # searched before the switch


def test_read_only_folder_forced(lib, monkeypatch, tiny_model_dir):
    """A folder that cannot be written (root ignores chmod, so os.access is forced to say so)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real(p, mode, **kw))
    opened: list[str] = []
    real_connect = sqlite3.connect
    monkeypatch.setattr(
        sqlite3, "connect", lambda db, *a, **kw: opened.append(db) or real_connect(db, *a, **kw)
    )
    before = snapshot(lib)
    assert len(json_lines(ok("--library", lib, "search", "x", "--json").stdout)) == 8
    ok("--library", lib, "info")
    assert opened and all("immutable=1" in u for u in opened), opened
    assert snapshot(lib) == before
    for args in (["index", lib.parent], ["add-texts", _texts(lib.parent)], ["use-model", tiny_model_dir]):
        assert_one_error_line(run("--library", lib, *args), f"library {lib} is read-only")
    assert snapshot(lib) == before


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _closed_folder(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other users may not enter, if any."""
    for folder in reversed([path, *path.parents]):
        if folder.is_dir() and not folder.stat().st_mode & 0o001:
            return folder
    return None


def _nobody_cannot_import(env: dict, cwd: Path) -> str | None:
    """Why user 65534 cannot import clipdex and numpy with this interpreter, or None if it can.

    The checkout and its virtual environment may sit where other users cannot read (a clone in a
    ``mktemp -d`` folder, mode 0700): the test then cannot run, which is no failure of clipdex.
    """
    probe = subprocess.run(
        [*NOBODY, sys.executable, "-c", "import numpy, clipdex.library"],
        capture_output=True, text=True, env=env, timeout=120, cwd=cwd,
    )  # fmt: skip
    if probe.returncode == 0:
        return None
    needed = [Path(sys.prefix), Path(__file__).resolve().parents[2]]
    closed = [f for f in map(_closed_folder, needed) if f is not None]
    why = (
        f"{closed[0]} is closed to other users"
        if closed
        else (probe.stderr.strip().splitlines() or ["?"])[-1]
    )
    return f"user 65534 cannot import clipdex and numpy from this checkout ({why})"


def test_read_only_folder_real(lib):
    """As an unprivileged user on a chmod 555 copy (skipped where no such user can be switched to,
    or where that user cannot reach this checkout's interpreter and packages)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to switch to an unprivileged user")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    unreachable = _nobody_cannot_import(env, Path("/"))
    if unreachable:
        pytest.skip(unreachable)
    top = Path(tempfile.mkdtemp(prefix="clipdex-ro-"))
    try:
        ro = top / "lib"
        shutil.copytree(lib, ro)
        for p in [top, *ro.rglob("*"), ro]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        code = (
            "import numpy as np, sys; from clipdex import Library\n"
            "lib = Library.open(sys.argv[1])\n"
            "q = np.ones(64, np.float32)\n"
            "print(len(lib.search(vector=q, k=5)), lib.info()['images'])\n"
            "try:\n    lib.add_texts(['x'])\nexcept Exception as e:\n    print(e)\n"
        )
        top.chmod(0o755)
        out = subprocess.run(
            [*NOBODY, sys.executable, "-c", code, str(ro)],
            capture_output=True, text=True, env=env, timeout=120, cwd=top,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "5 8" and f"library {ro} is read-only" in lines[1], out.stdout
        assert sorted(p.name for p in ro.iterdir()) == sorted(p.name for p in lib.iterdir())
    finally:
        for p in [top, *top.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(top)


def test_old_schema_is_read_without_migrating_and_upgraded_by_a_writer(lib):
    conn = sqlite3.connect(lib / "clipdex.db")
    conn.execute("DROP TABLE changes")
    conn.execute("DELETE FROM meta WHERE key LIKE 'changes_since_%'")
    latest = len(schema_module.MIGRATIONS)  # the change log is the latest migration: undo it
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(latest - 1),))
    conn.commit()
    conn.close()
    before = snapshot(lib)
    assert len(json_lines(ok("--library", lib, "search", "x", "--json").stdout)) == 8
    assert snapshot(lib) == before
    check = run("--library", lib, "check", "--json")
    assert check.exit_code == 1 and '"kind": "schema"' in check.stdout
    ok("--library", lib, "check", "--repair")
    assert Store(lib).schema_version == latest


def test_migration_waits_for_the_writer_lock(lib, monkeypatch):
    from helpers.locks import hold_lock

    conn = sqlite3.connect(lib / "clipdex.db")
    conn.execute("DROP TABLE changes")
    latest = len(schema_module.MIGRATIONS)  # the change log is the latest migration: undo it
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(latest - 1),))
    conn.commit()
    conn.close()
    monkeypatch.setenv("CLIPDEX_LOCK_TIMEOUT", "0.3")
    holder = hold_lock(lib)
    try:
        with pytest.raises(Exception, match="is writing to library"):
            Store(lib, write=True)
    finally:
        holder.kill()
        holder.wait()
    assert Store(lib, write=True).schema_version == latest


@pytest.mark.parametrize("content", [b"", b"this is not a database at all" * 100])
@pytest.mark.parametrize("command", ["search", "info", "index", "check"])
def test_damaged_database_is_never_recreated(lib, content, command):
    db = lib / "clipdex.db"
    db.write_bytes(content)
    for extra in ("clipdex.db-wal", "clipdex.db-shm"):
        (lib / extra).unlink(missing_ok=True)
    before = snapshot(lib)
    args = {"search": ["search", "x"], "info": ["info"], "index": ["index", lib.parent], "check": ["check"]}
    res = run("--library", lib, *args[command])
    assert_one_error_line(res, str(db), "is not a clipdex database or is damaged", "backup")
    assert db.read_bytes() == content and snapshot(lib) == before


def test_feature_needing_newer_schema_says_how_to_upgrade(lib):
    sql = sqlite3.connect(lib / "clipdex.db")
    sql.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    sql.commit()
    sql.close()
    store = Store(lib)
    with pytest.raises(Exception, match=r"needs a newer library format .* `clipdex check --repair`"):
        store.require_schema(3, "the change log")
    store.close()


def test_readers_map_the_file_read_only_and_writers_load_it_whole(lib):
    query = unit(np.random.default_rng(6), 1, 64)[0]
    with Library.open(lib) as library:
        before = library.search(vector=query, k=3)
        view = library.indexes.view(IMAGE)
        assert view.mapped
        with pytest.raises(RuntimeError, match="read-only"):
            view.remove(view.ids()[:1])  # FAISS itself would abort the process
        with library.writing():  # the same Library turning writer reloads the file unmapped
            idx = library.indexes.get(IMAGE)
            assert not idx.mapped
            idx.remove(idx.ids()[:1])
            assert idx.ntotal == 7
    assert [h.id for h in before] == [i for i, _ in search_matches_sqlite(lib, query, 3)]


def test_a_version_3_file_is_still_read(lib):
    from clipdex.index.faiss import files
    from clipdex.index.faiss.vector_index import LEGACY_MAGIC

    path = lib / "images.faiss"
    idx = VectorIndex.load(path)
    header = b'{"generation": %d, "dim": 64}' % idx.generation
    with open(path, "wb") as f:
        f.write(LEGACY_MAGIC + len(header).to_bytes(8, "little") + header)
        files.write(idx.ann, f)
    before = snapshot(lib)
    query = unit(np.random.default_rng(7), 1, 64)[0]
    warnings: list[str] = []
    with Library.open(lib, warn=warnings.append) as library:
        hits = library.search(vector=query, k=5)
    assert_same(hits, search_matches_sqlite(lib, query, 5))
    assert warnings == [] and snapshot(lib) == before


@pytest.mark.parametrize("kind", ["flat", "ivf-flat", "ivf-fp16"])
def test_touch_maps_the_pages_in_and_changes_nothing(tmp_path, kind):
    import faiss

    rng = np.random.default_rng(8)
    vecs = unit(rng, 3000, 64)
    ids = np.arange(10, 3010, dtype=np.int64)
    VectorIndex.build(ids, vecs, 64, generation=1, kind=kind).save(tmp_path / "images.faiss")
    mapped = VectorIndex.load(tmp_path / "images.faiss", mmap=True)
    queries = unit(rng, 5, 64)
    before = mapped.search(queries, 10, lambda want: vecs[want - 10])
    nprobe = mapped.ann.info["params"].get("nprobe")
    mapped.touch()
    assert mapped.search(queries, 10, lambda want: vecs[want - 10]) == before
    if kind.startswith("ivf"):
        assert faiss.extract_index_ivf(mapped.ann.index).nprobe == nprobe < mapped.ann.info["params"]["nlist"]


def test_a_reader_caught_between_a_writers_two_files_retries(tmp_path, monkeypatch):
    """A save replaces the head file, then deletes the old data file: a reader that read the old
    head just before finds its data file gone, and reads the new head instead of giving up."""
    from clipdex.index.faiss import files

    rng = np.random.default_rng(9)
    path = tmp_path / "images.faiss"
    VectorIndex.build(np.arange(5), unit(rng, 5, 64), 64, generation=1, kind="flat").save(path)
    real = files.read_index_file
    calls = []

    def writer_in_between(head, data, mmap):
        calls.append(data.name)
        if len(calls) == 1:  # a writer saves now: new head, the data file just named is deleted
            VectorIndex.build(np.arange(7), unit(rng, 7, 64), 64, generation=2, kind="flat").save(path)
        return real(head, data, mmap)

    monkeypatch.setattr(files, "read_index_file", writer_in_between)
    loaded = VectorIndex.load(path, mmap=True)
    assert loaded is not None and loaded.generation == 2 and loaded.ntotal == 7
    assert len(calls) == 2 and calls[0] != calls[1]


@pytest.mark.parametrize("garbage", [b"\xff" * 8, (1 << 40).to_bytes(8, "little")])
def test_a_head_with_a_garbage_length_is_damaged_not_a_crash(tmp_path, garbage):
    rng = np.random.default_rng(10)
    path = tmp_path / "images.faiss"
    VectorIndex.build(np.arange(5), unit(rng, 5, 64), 64, generation=1, kind="flat").save(path)
    raw = path.read_bytes()
    header_end = len(b"CLIPDEX-FAISS-4\n") + 8 + int.from_bytes(raw[16:24], "little")
    path.write_bytes(raw[:header_end] + garbage + raw[header_end + 8 :])
    assert VectorIndex.load(path) is None


def test_a_flat_reader_scores_its_catch_up_from_its_own_vectors(tmp_path):
    """Without get_vectors a flat index re-ranks from its own vectors: those of a replaced or added
    id come from the catch-up, not from the base (where a replaced id's old vector still lies)."""
    rng = np.random.default_rng(10)
    vecs = unit(rng, 50, 16)
    index = VectorIndex.build(np.arange(50), vecs, 16, generation=1, kind="flat")
    current = {3: -vecs[3], 99: unit(rng, 1, 16)[0]}
    index.apply_changes(
        [("remove", 3, 3), ("add", 3, 3), ("add", 99, 99)],
        lambda ids: (
            np.array([i for i in ids if i in current]),
            np.array([current[i] for i in ids if i in current]),
        ),
        generation=2,
    )
    for item, vec in current.items():
        (best, score), *_ = index.search(vec[None], 3)[0]
        assert best == item and score == pytest.approx(1.0, abs=1e-6)
