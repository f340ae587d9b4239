"""Store: creating and opening the database, damaged files, transactions, generations, and the
tables' round trips (items, failures, pending vectors, the change log)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from clipdex.errors import ClipdexError
from clipdex.index.store.database import Store
from clipdex.index.store.schema import DB_NAME, SCHEMA_VERSION
from clipdex.kinds import IMAGE, TEXT


def _vecs(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "lib", create=True)
    s.meta.set("dim", "8")
    yield s
    s.close()


def test_no_library_without_create(tmp_path):
    with pytest.raises(ClipdexError, match="no library at"):
        Store(tmp_path / "lib")
    assert not (tmp_path / "lib").exists()


def test_create_makes_a_whole_database_and_leaves_nothing_aside(tmp_path):
    s = Store(tmp_path / "lib", create=True)
    assert s.writable and s.schema_version == SCHEMA_VERSION and s.generation == 0 and s.dim is None
    s.close()
    assert sorted(p.name for p in (tmp_path / "lib").iterdir() if p.name.startswith(".")) == []
    reader = Store(tmp_path / "lib")
    assert not reader.writable and reader.schema_version == SCHEMA_VERSION
    with pytest.raises(sqlite3.OperationalError):  # opened read-only
        reader.conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    reader.close()


@pytest.mark.parametrize(
    "content, words",
    [(b"", "the file is empty"), (b"not a database at all" * 100, "not a clipdex database or is damaged")],
)
def test_a_damaged_file_is_named_and_never_replaced(tmp_path, content, words):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / DB_NAME).write_bytes(content)
    for kwargs in ({}, {"create": True}, {"write": True}):
        with pytest.raises(ClipdexError, match=words):
            Store(tmp_path / "lib", **kwargs)
    assert (tmp_path / "lib" / DB_NAME).read_bytes() == content


def test_a_sqlite_file_without_clipdex_tables_is_damaged(tmp_path):
    (tmp_path / "lib").mkdir()
    with sqlite3.connect(tmp_path / "lib" / DB_NAME) as conn:
        conn.execute("CREATE TABLE other (x)")
    with pytest.raises(ClipdexError, match="it has no clipdex tables"):
        Store(tmp_path / "lib")


def test_items_round_trip(store):
    v = _vecs(3)
    img = store.items.insert(IMAGE, "scan", v[:2], paths=[b"/p/a.png", b"/p/\xff.png"],
                             stats=[(1_000_000_000, 10), (2_000_000_000, 20)])  # fmt: skip
    (txt,) = store.items.insert(TEXT, "sidecar", v[2:], texts=["a caption"], image_ids=[img[0]])
    assert img == [1, 2] and txt == 3  # row ids, in order
    got = store.items.get([*img, txt, 99])
    assert set(got) == {1, 2, 3}
    assert got[2].path == b"/p/\xff.png" and got[2].kind == IMAGE and got[2].source == "scan"
    assert got[3].text == "a caption" and got[3].image_id == 1 and got[3].path is None
    assert store.items.record(1)["mtime_ns"] == 1_000_000_000 and store.items.record(99) is None
    assert store.items.image_id_by_path(b"/p/\xff.png") == 2 and store.items.image_id_by_path(b"/x") is None
    assert store.items.captions_of(1) == [(3, "a caption")]
    assert store.items.count() == 3 and store.items.count(IMAGE) == 2
    assert store.items.ids(IMAGE).tolist() == [1, 2]
    ids, vecs = store.vectors.all(IMAGE)
    assert ids.tolist() == [1, 2]
    np.testing.assert_array_equal(vecs, v[:2])


def test_every_write_is_one_generation_with_its_changes_logged(store):
    assert store.generation == 0
    ids = store.items.insert(IMAGE, "scan", _vecs(3), paths=[b"a", b"b", b"c"])
    assert store.generation == 1
    with store.transaction():  # several writes in one transaction: one generation
        store.items.insert(TEXT, "add-texts", _vecs(1, seed=1), texts=["t"])
        store.items.insert(IMAGE, "scan", _vecs(1, seed=2), paths=[b"d"])
    assert store.generation == 2
    assert store.changes.between(IMAGE, 0, 1) == [("add", ids[0], ids[-1])]  # consecutive ids: one run
    assert store.changes.between(IMAGE, 1, 2) == [("add", 5, 5)]
    assert store.changes.between(TEXT, 0, 2) == [("add", 4, 4)]
    store.changes.prune(IMAGE, 1)
    assert store.changes.logged_since(IMAGE) == 1 and store.changes.between(IMAGE, 0, 2) == [("add", 5, 5)]


def test_a_failed_transaction_writes_nothing(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.items.insert(IMAGE, "scan", _vecs(2), paths=[b"a", b"b"])
        raise RuntimeError("boom")
    assert store.items.count() == 0 and store.generation == 0


def test_failures_round_trip(store):
    assert store.failures.all() == {} and store.failures.count() == 0
    store.failures.record([(b"/p/bad.png", 12, 34, "cannot decode"), (b"/p/\xfe.jpg", 1, 2, "truncated")])
    store.failures.record([(b"/p/bad.png", 13, 35, "still bad")])  # replaces the path's row
    assert store.failures.all() == {b"/p/bad.png": (13, 35), b"/p/\xfe.jpg": (1, 2)}
    store.failures.forget([b"/p/bad.png"])
    assert store.failures.all() == {b"/p/\xfe.jpg": (1, 2)} and store.failures.count() == 1


def test_pending_vectors_swap_in_and_drop_items_without_one(store):
    old = _vecs(3)
    ids = store.items.insert(IMAGE, "scan", old, paths=[b"a", b"b", b"c"])
    new = _vecs(2, seed=9)
    store.pending.put(ids[:2], new)
    assert store.pending.ids() == set(ids[:2]) and store.pending.exists()
    assert store.pending.stray_ids() == sorted(ids[:2])  # no re-embedding under way: all stray
    store.meta.set("pending_model", "m")
    assert store.pending.stray_ids() == []
    ids_before, vecs_before = store.vectors.all(IMAGE)
    np.testing.assert_array_equal(vecs_before, old)  # searches keep the old vectors meanwhile
    assert store.pending.swap_in() == [ids[2]]
    got_ids, got = store.vectors.all(IMAGE)
    assert got_ids.tolist() == ids[:2]
    np.testing.assert_array_equal(got, new)
    assert store.pending.ids() == set()


def test_a_reader_sees_a_writers_commits(tmp_path):
    writer = Store(tmp_path / "lib", create=True)
    writer.meta.set("dim", "8")
    reader = Store(tmp_path / "lib")
    writer.items.insert(TEXT, "add-texts", _vecs(2), texts=["x", "y"])
    assert reader.items.count(TEXT) == 2 and reader.generation == writer.generation == 1
    writer.close()
    reader.close()
