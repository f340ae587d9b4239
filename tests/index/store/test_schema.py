"""The schema's migrations: applied in order, each recorded, never re-run, newer schemas refused."""

from __future__ import annotations

import sqlite3

import pytest

from clipdex.errors import ClipdexError
from clipdex.index.store import schema
from clipdex.index.store.database import Store
from clipdex.index.store.schema import DB_NAME, MIGRATIONS, SCHEMA_VERSION


def _version(path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


def test_schema_version_counts_the_migrations():
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 6
    assert [m.__name__ for m in MIGRATIONS][:2] == ["_m1_initial", "_m2_pending"]
    numbers = [int(m.__name__.split("_")[1][1:]) for m in MIGRATIONS]
    assert numbers == list(range(1, len(MIGRATIONS) + 1))  # named in the order they run


def test_a_new_database_runs_every_migration_in_order_and_records_each(tmp_path, monkeypatch):
    ran: list[tuple[str, int]] = []

    def spy(fn):
        def run(db):
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            ran.append((fn.__name__, int(version[0]) if version else 0))
            fn(db)

        return run

    monkeypatch.setattr(schema, "MIGRATIONS", [spy(m) for m in MIGRATIONS])
    Store(tmp_path / "lib", create=True).close()
    # Each migration sees the previous one recorded: one transaction per step.
    assert ran == [(m.__name__, n) for n, m in enumerate(MIGRATIONS)]
    assert _version(tmp_path / "lib" / DB_NAME) == SCHEMA_VERSION


def test_an_older_database_gets_only_the_missing_migrations_from_a_writer(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:3])
    Store(tmp_path / "lib", create=True).close()
    assert _version(tmp_path / "lib" / DB_NAME) == 3
    ran = []
    later = [lambda db, m=m: (ran.append(m.__name__), m(db)) for m in MIGRATIONS[3:]]
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:3] + later)
    reader = Store(tmp_path / "lib")  # readers never migrate
    assert reader.schema_version == 3 and ran == []
    assert not reader.has_table("vector_files")
    reader.close()
    writer = Store(tmp_path / "lib", write=True)
    assert ran == [m.__name__ for m in MIGRATIONS[3:]]
    assert writer.schema_version == SCHEMA_VERSION and writer.has_table("vector_files")
    assert writer.has_columns("items", "taken_at", "vfile", "vrow")
    writer.close()
    ran.clear()
    Store(tmp_path / "lib", write=True).close()  # up to date: nothing runs again
    assert ran == []
    assert _version(tmp_path / "lib" / DB_NAME) == SCHEMA_VERSION


def test_a_failing_migration_leaves_the_last_good_version(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:4])
    Store(tmp_path / "lib", create=True).close()

    def broken(db):
        db.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("migration failed")

    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS[:4], broken])
    with pytest.raises(RuntimeError, match="migration failed"):
        Store(tmp_path / "lib", write=True)
    assert _version(tmp_path / "lib" / DB_NAME) == 4
    with sqlite3.connect(tmp_path / "lib" / DB_NAME) as conn:  # its transaction was rolled back
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'half_done'").fetchone() is None


@pytest.mark.parametrize("write", [False, True])
def test_a_newer_schema_is_refused_with_a_clear_error(tmp_path, write):
    Store(tmp_path / "lib", create=True).close()
    with sqlite3.connect(tmp_path / "lib" / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(ClipdexError, match=f"schema version {SCHEMA_VERSION + 1} is newer than this clipdex"):
        Store(tmp_path / "lib", write=write)


def test_require_schema_names_the_upgrade(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:2])
    Store(tmp_path / "lib", create=True).close()
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS)
    reader = Store(tmp_path / "lib")
    reader.require_schema(2, "anything")
    with pytest.raises(ClipdexError, match=r"dates needs a newer library format \(version 4; .* at 2\)"):
        reader.require_schema(4, "dates")
    reader.close()


def test_schema_9_drops_the_insert_trigger_and_both_insert_paths_still_feed_the_words(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:8])
    old = Store(tmp_path / "lib", create=True, write=True)
    old.items.insert("image", "scan", np.ones((1, 4), np.float32), paths=[b"/p/before_9.jpg"])
    old.close()
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS)
    store = Store(tmp_path / "lib", write=True)
    try:
        triggers = {n for (n,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert "words_item_added" not in triggers and "words_item_removed" in triggers
        one = store.items.insert("image", "scan", np.ones((1, 4), np.float32), paths=[b"/p/single_shot.png"])
        (cap,) = store.items.insert("text", "sidecar", np.ones((1, 4), np.float32), texts=["a red kite"],
                                    image_ids=one)  # fmt: skip
        many = store.items.insert_many("image", "import", np.ones((3, 4), np.float32),
                                       paths=[b"/q/bulk_%d.jpg" % i for i in range(3)])  # fmt: skip
        assert store.words.stale() == 0  # each insert marked its documents, written at its commit
        found = {q: store.words.ranked(q) for q in ('"before"', '"single"', '"kite"', '"bulk"')}
        assert found['"single"'] == one
        assert sorted(found['"kite"']) == sorted([*one, cap])  # the caption: its own and its image's
        assert sorted(found['"bulk"']) == many.tolist() and len(found['"before"']) == 1
    finally:
        store.close()
