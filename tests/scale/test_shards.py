"""`clipdex import-embeddings SHARD_DIR`: `embed`'s output and clip-retrieval's, shard by shard."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.corehelp import assert_one_error_line, brute_force, json_lines, ok, run, stored
from helpers.embedhelp import photo_folder

from clipdex.kinds import IMAGE, TEXT


def _search(lib, *query) -> list[dict]:
    return json_lines(ok("--library", lib, "search", *query, "-k", "20", "--json").stdout)


def test_embed_then_import_searches_like_index(tmp_path, tiny_model_dir, monkeypatch):
    import clipdex.library.importing as import_run

    photos = photo_folder(tmp_path)
    ok("--library", tmp_path / "indexed", "index", photos, "--model", tiny_model_dir)
    ok("embed", photos, "--out", tmp_path / "emb", "--model", tiny_model_dir, "--shard-size", "3")
    calls = []
    real = import_run.import_embeddings
    monkeypatch.setattr(import_run, "import_embeddings", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    lib = tmp_path / "imported"
    # No --model: the new library takes the model recorded in the shard folder's manifest.
    r = ok("--library", lib, "import-embeddings", tmp_path / "emb", "--json")
    assert json.loads(r.stdout) == {"imported": 10, "updated": 0, "unchanged": 0, "missing_files": 0}
    assert [p.name for p in calls] == [f"img_emb_{i:05d}.npy" for i in range(4)]  # one shard at a time
    info = json.loads(ok("--library", lib, "info", "--json").stdout)
    assert info["model"] == f"local-dir:{tiny_model_dir.resolve()}" and info["images"] == 10
    ids, vecs = stored(lib, IMAGE)
    for query in (["a red square"], ["--image", photos / "a2.jpg"], ["--image", photos / "big.jpg"]):
        want, got = _search(tmp_path / "indexed", *query), _search(lib, *query)
        # The same items with the same scores up to the float16 storage of the shards...
        assert sorted(h["path"] for h in got) == sorted(h["path"] for h in want)
        scores = {h["path"]: h["score"] for h in want}
        assert all(abs(h["score"] - scores[h["path"]]) < 2e-3 for h in got)
        # ...ranked exactly as brute force over the imported vectors ranks them.
        from clipdex import Library

        with Library.open(lib) as library:
            text, image = (query[0], None) if len(query) == 1 else (None, query[1])
            plan = library.plan_query(text, image)
            q = library.query_vector(plan)
        assert [h["id"] for h in got] == [i for i, _ in brute_force(ids, vecs, q, 20)]
    assert_one_error_line(run("--library", lib, "import-embeddings", tmp_path / "emb", "--model", tmp_path),
                          "local-dir")  # fmt: skip


def test_clip_retrieval_folder_with_text_embeddings(tmp_path, tiny_model_dir):
    out = tmp_path / "cr"
    for sub in ("img_emb", "text_emb", "metadata"):
        (out / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths, caps = [], []
    for shard, n in enumerate((3, 2)):  # clip-retrieval names shards without padding
        img = rng.standard_normal((n, 64)).astype(np.float16)
        txt = rng.standard_normal((n, 64)).astype(np.float16)
        p = [str(tmp_path / f"s{shard}_{i}.jpg") for i in range(n)]
        c = [f"caption {shard} {i}" for i in range(n)]
        np.save(out / "img_emb" / f"img_emb_{shard}.npy", img)
        np.save(out / "text_emb" / f"text_emb_{shard}.npy", txt)
        pq.write_table(
            pa.table({"image_path": p, "caption": c}), out / "metadata" / f"metadata_{shard}.parquet"
        )
        paths += p
        caps += c
    lib = tmp_path / "lib"
    r = ok("--library", lib, "import-embeddings", out, "--model", tiny_model_dir, "--json")
    # the five image paths name no file on this machine: imported anyway, and counted
    assert json.loads(r.stdout) == {"imported": 10, "updated": 0, "unchanged": 0, "missing_files": 5}
    again = ok("--library", lib, "import-embeddings", out, "--json")  # idempotent, shard by shard
    assert json.loads(again.stdout) == {"imported": 0, "updated": 0, "unchanged": 10, "missing_files": 5}
    from clipdex.index.store.database import Store

    store = Store(lib)
    try:
        items = store.items.get(stored(lib, IMAGE)[0].tolist())
        assert sorted(it.path.decode() for it in items.values()) == sorted(paths)
        texts = store.items.get(stored(lib, TEXT)[0].tolist())
        assert sorted(it.text for it in texts.values()) == sorted(caps)
    finally:
        store.close()
    (out / "metadata" / "metadata_1.parquet").unlink()
    r = run("--library", tmp_path / "l2", "import-embeddings", out, "--model", tiny_model_dir)
    assert_one_error_line(r, "metadata_1.parquet")
    assert run("--library", lib, "import-embeddings", out, out / "img_emb" / "img_emb_0.npy").exit_code == 2


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_files_written_atomically_follow_the_umask(tmp_path, umask, mode):
    """Vector files and embed shards get the permissions any new file gets: a private umask keeps
    them private (a forced 0o644 made a private library's vectors world-readable)."""
    from clipdex.index.durable import write_atomically

    old = os.umask(umask)
    try:
        write_atomically(tmp_path / "v.npy", lambda f: f.write(b"data"))
    finally:
        os.umask(old)
    assert (tmp_path / "v.npy").read_bytes() == b"data"
    assert (tmp_path / "v.npy").stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["v.npy"]  # no temporary file left
