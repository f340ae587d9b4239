"""`import-embeddings` with video frame rows: metadata rows with `t`/`t_end` are a video's frames.

A video (its path's rows with a t) is imported, unchanged or replaced whole; pictures in the same
metadata go through the path-keyed merge as before; large-library mode does the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.corehelp import assert_one_error_line, json_lines, make_images, ok, run

from clipdex import Filter, Library
from clipdex.index.store.database import Store

DIM = 64  # the tiny test model's embedding size (tests/conftest.py)
ONDISK = "ivf-pq-ondisk"
PICS = [f"/data/photos/p{i}.jpg" for i in range(3)]
A, B = "/data/clips/a.mp4", "/data/clips/b.mp4"


def vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, DIM)) * rng.uniform(0.5, 3.0, (n, 1))).astype(np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def base_rows() -> list[dict]:
    """3 pictures and the frames of two videos, A's rows not contiguous, B's last without t_end."""
    return [
        {"path": PICS[0]},
        {"path": A, "t": 4.0, "t_end": 8.0},
        {"path": PICS[1]},
        {"path": B, "t": 0.0, "t_end": 3.5},
        {"path": A, "t": 0.0, "t_end": 4.0},
        {"path": PICS[2]},
        {"path": B, "t": 3.5},
        {"path": A, "t": 8.0, "t_end": 12.5},
    ]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    cols = {
        "path": [r["path"] for r in rows],
        "t": pa.array([r.get("t") for r in rows], pa.float64()),
        "t_end": pa.array([r.get("t_end") for r in rows], pa.float64()),
    }
    pq.write_table(pa.table(cols), path)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    lines = ["path,t,t_end"] + [f"{r['path']},{r.get('t', '')},{r.get('t_end', '')}" for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


WRITERS = {".parquet": write_parquet, ".csv": write_csv, ".jsonl": write_jsonl}


def do_import(lib: Path, folder: Path, name: str, vecs: np.ndarray, rows: list[dict], *args: object) -> dict:
    np.save(folder / f"{name}.npy", vecs)
    fmt = Path(name).suffix or ".parquet"
    meta = WRITERS[fmt](folder / (name if Path(name).suffix else f"{name}.parquet"), rows)
    out = ok("--library", lib, "import-embeddings", folder / f"{name}.npy", meta, "--json", *args)
    return json.loads(out.stdout)


def counts(**kw: int) -> dict:
    return {"imported": 0, "updated": 0, "unchanged": 0, "missing_files": 0, **kw}


def video_frames(lib: Path) -> dict[str, list[tuple[int, float, float]]]:
    """video path -> [(id, t, t_end)] by t, straight from the store."""
    store = Store(lib)
    try:
        rows = store.conn.execute(
            "SELECT path, id, t, t_end, mtime_ns FROM items WHERE source = 'video' ORDER BY path, t"
        ).fetchall()
    finally:
        store.close()
    out: dict[str, list] = {}
    for p, i, t, e, m in rows:
        assert m is None  # imported: no file seen
        out.setdefault(os.fsdecode(bytes(p)), []).append((i, t, e))
    return out


def ntotal(lib: Path) -> int:
    with Library.open(lib) as opened:
        return opened.info()["indexes"]["images"]["ntotal"]


@pytest.fixture
def first(tmp_path, tiny_model_dir) -> dict:
    """A new library holding base_rows() imported from parquet."""
    lib, vecs = tmp_path / "lib", vectors(8, seed=0)
    got = do_import(lib, tmp_path, "m", vecs, base_rows(), "--model", tiny_model_dir)
    assert got == counts(imported=8, missing_files=5)  # 3 pictures, and each video once
    return {"lib": lib, "vecs": vecs, "rows": base_rows()}


def check_first(lib: Path, vecs: np.ndarray, rows: list[dict]) -> None:
    """Frames are searchable with their spans under --media videos; photos exclude them."""
    frames = video_frames(lib)
    assert [(t, e) for _, t, e in frames[A]] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.5)]
    assert [(t, e) for _, t, e in frames[B]] == [(0.0, 3.5), (3.5, 3.5)]
    with Library.open(lib) as opened:
        for row in (1, 4, 6, 7):
            want = rows[row]
            hits = opened.search(vector=vecs[row], k=10, filter=Filter(media="videos"))
            assert len(hits) == 5 and all(h.modality == "video" for h in hits)
            assert hits[0].path == want["path"] and hits[0].score == pytest.approx(1, abs=2e-3)
            assert (hits[0].t, hits[0].t_end) == (want["t"], want.get("t_end", want["t"]))
        photos = opened.search(vector=vecs[1], k=10, filter=Filter(media="photos"))
        assert sorted(h.path for h in photos) == sorted(PICS)
        assert all(h.modality == "image" and h.t is None for h in photos)
        hit = opened.search(vector=vecs[2], k=1)[0]
        assert hit.path == PICS[1] and hit.score == pytest.approx(1, abs=2e-3)
        assert opened.info()["indexes"]["images"]["ntotal"] == 8


def test_pictures_and_two_videos_then_reimport_is_unchanged(first, tmp_path):
    lib, vecs, rows = first["lib"], first["vecs"], first["rows"]
    check_first(lib, vecs, rows)
    before = video_frames(lib)
    # The same rows again, from csv and jsonl (empty cell / missing key = no t): nothing changes.
    assert do_import(lib, tmp_path, "again.csv", vecs, rows) == counts(unchanged=8, missing_files=5)
    assert do_import(lib, tmp_path, "again.jsonl", vecs, rows) == counts(unchanged=8, missing_files=5)
    assert video_frames(lib) == before and ntotal(lib) == 8


def test_a_changed_video_is_replaced_whole_the_other_stays(first, tmp_path):
    lib, vecs, rows = first["lib"], first["vecs"].copy(), first["rows"]
    before = video_frames(lib)
    vecs[4] = vectors(1, seed=9)[0]  # one frame of A
    assert do_import(lib, tmp_path, "u", vecs, rows) == counts(updated=3, unchanged=5, missing_files=5)
    after = video_frames(lib)
    assert after[B] == before[B]  # same ids
    old_a, new_a = {i for i, *_ in before[A]}, {i for i, *_ in after[A]}
    assert len(new_a) == 3 and not old_a & new_a  # replaced whole: new ids
    assert [(t, e) for _, t, e in after[A]] == [(t, e) for _, t, e in before[A]]
    with Library.open(lib) as opened:
        assert opened.store.items.get(sorted(old_a)) == {}
        hit = opened.search(vector=vecs[4], k=1)[0]
        assert hit.id in new_a and hit.score == pytest.approx(1, abs=1e-5)
        again = opened.search(vector=first["vecs"][4], k=1)[0]
        assert again.score < 0.99  # the old vector is gone from the index
        assert opened.info()["indexes"]["images"]["ntotal"] == 8


def test_a_video_with_fewer_frames_loses_its_stale_ones(first, tmp_path):
    lib, vecs, rows = first["lib"], first["vecs"], first["rows"]
    keep = [r for r in range(8) if r != 7]  # A's last frame goes; A's second now ends at 12.5
    rows2 = [dict(rows[r]) for r in keep]
    rows2[1]["t_end"] = 12.5
    assert do_import(lib, tmp_path, "f", vecs[keep], rows2) == counts(updated=2, unchanged=5, missing_files=5)
    frames = video_frames(lib)
    assert [(t, e) for _, t, e in frames[A]] == [(0.0, 4.0), (4.0, 12.5)]
    with Library.open(lib) as opened:
        assert opened.store.items.count("image") == 7
        assert opened.search(vector=vecs[7], k=1)[0].score < 0.99
        assert opened.info()["indexes"]["images"]["ntotal"] == 7


def test_repeated_frames_count_once_and_pictures_do_not_touch_frames(first, tmp_path):
    lib = first["lib"]
    before = video_frames(lib)
    # Pictures only, one a new path, the others changed vectors: the frames are left alone.
    pics = vectors(4, seed=5)
    got = do_import(lib, tmp_path, "p.csv", pics, [{"path": p} for p in [*PICS, "/data/photos/new.jpg"]])
    assert got == counts(imported=1, updated=3, missing_files=4)
    assert video_frames(lib) == before
    # A third video whose t=0 frame is given twice (the first row wins) and another picture.
    extra = vectors(4, seed=6)
    c = "/data/clips/c.mp4"
    rows3 = [{"path": c, "t": 0.0, "t_end": 2.0}, {"path": "/data/photos/q.jpg"}, {"path": c, "t": 2.0},
             {"path": c, "t": 0.0, "t_end": 9.0}]  # fmt: skip
    assert do_import(lib, tmp_path, "c", extra, rows3) == counts(imported=3, unchanged=1, missing_files=2)
    frames = video_frames(lib)
    assert frames[A] == before[A] and frames[B] == before[B]
    assert [(t, e) for _, t, e in frames[c]] == [(0.0, 2.0), (2.0, 2.0)]
    with Library.open(lib) as opened:
        hit = opened.search(vector=extra[0], k=1, filter=Filter(media="videos"))[0]
        assert (hit.path, hit.t, hit.score) == (c, 0.0, pytest.approx(1, abs=1e-5))
        assert opened.search(vector=pics[3], k=1)[0].path == "/data/photos/new.jpg"
        assert opened.info()["indexes"]["images"]["ntotal"] == 8 + 1 + 3


def test_a_picture_row_at_a_videos_path_never_updates_its_frames(first, tmp_path):
    lib = first["lib"]
    before = video_frames(lib)
    pic = vectors(1, seed=8)
    assert do_import(lib, tmp_path, "pa.csv", pic, [{"path": A}]) == counts(imported=1, missing_files=1)
    assert video_frames(lib) == before  # the path-keyed merge does not match a video's frames
    with Library.open(lib) as opened:
        hit = opened.search(vector=pic[0], k=1, filter=Filter(media="photos"))[0]
        assert (hit.path, hit.modality, hit.t) == (A, "image", None)
        assert opened.info()["indexes"]["images"]["ntotal"] == 9


@pytest.mark.parametrize(
    ("fmt", "row", "needle"),
    [
        (".csv", {"path": A, "t": -1.0}, "below 0"),
        (".csv", {"path": A, "t": "soon"}, "not a number"),
        (".csv", {"path": A, "t": "nan"}, "not a finite number"),
        (".jsonl", {"path": A, "t": 5.0, "t_end": 4.0}, "before its t"),
        (".jsonl", {"path": A, "t_end": 4.0}, "but no t"),
        (".jsonl", {"path": A, "t": True}, "not a number"),
        (".jsonl", {"path": PICS[0], "t": 1.0}, "a picture or a video"),
        (".parquet", {"path": A, "t": float("inf")}, "not a finite number"),
        (".parquet", {"path": A, "t": 3.0, "t_end": 1.0}, "before its t"),
    ],
)
def test_bad_spans_are_one_line_naming_the_row_and_change_nothing(first, tmp_path, fmt, row, needle):
    lib = first["lib"]
    before = video_frames(lib)
    rows = [*base_rows()[:3], row, *base_rows()[3:]]  # the bad row is row 3
    np.save(tmp_path / "bad.npy", vectors(9, seed=3))
    meta = WRITERS[fmt](tmp_path / f"bad{fmt}", rows)
    r = run("--library", lib, "import-embeddings", tmp_path / "bad.npy", meta)
    assert_one_error_line(r, f"bad{fmt}", "row", needle)
    assert "row 3 " in r.stderr or (needle == "a picture or a video" and "row 0 " in r.stderr)
    assert video_frames(lib) == before and ntotal(lib) == 8


def test_texts_ignore_t_columns(tmp_path, tiny_model_dir):
    lib = tmp_path / "lib"
    np.save(tmp_path / "t.npy", vectors(2, seed=1))
    write_jsonl(tmp_path / "t.jsonl", [{"text": "a cat", "t": "whenever"}, {"text": "a dog", "t_end": -3}])
    out = ok("--library", lib, "import-embeddings", tmp_path / "t.npy", tmp_path / "t.jsonl",
             "--model", tiny_model_dir, "--json")  # fmt: skip
    assert json.loads(out.stdout) == counts(imported=2)


def test_a_failure_halfway_through_the_videos_undoes_the_whole_import(first, tmp_path, monkeypatch):
    import clipdex.library.importing as importing
    from clipdex.index.store.frame_merge import FrameMerge

    lib, vecs = first["lib"], first["vecs"].copy()
    before = video_frames(lib)
    monkeypatch.setattr(importing, "FRAME_BATCH", 2)  # one video a batch: A, then B
    real, calls = FrameMerge.videos, []

    def flaky(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", "clipdex.db")
        return real(self, *a, **kw)

    monkeypatch.setattr(FrameMerge, "videos", flaky)
    vecs[:] = vectors(8, seed=12)  # everything changed: pictures updated, A replaced, then B fails
    np.save(tmp_path / "x.npy", vecs)
    write_parquet(tmp_path / "x.parquet", first["rows"])
    r = run("--library", lib, "import-embeddings", tmp_path / "x.npy", tmp_path / "x.parquet")
    assert r.exit_code == 1 and "disk full" in r.stderr
    assert len(calls) == 2 and video_frames(lib) == before
    monkeypatch.setattr(FrameMerge, "videos", real)
    check_first(lib, first["vecs"], first["rows"])


def test_index_keeps_imported_frames_of_a_video_it_does_not_find(tmp_path, tiny_model_dir):
    folder = tmp_path / "media"
    make_images(folder, ["red.png"])
    lib = tmp_path / "lib"
    gone = str(folder / "clip.mp4")  # inside the indexed folder, but no such file
    rows = [{"path": gone, "t": 0.0, "t_end": 2.0}, {"path": gone, "t": 2.0, "t_end": 4.0}]
    assert do_import(lib, tmp_path, "v", vectors(2, seed=4), rows, "--model", tiny_model_dir) == counts(
        imported=2, missing_files=1
    )
    (out,) = json_lines(ok("--library", lib, "index", folder, "--json").stdout)
    assert out["added"] == 1 and out["removed"] == 0
    assert [(t, e) for _, t, e in video_frames(lib)[gone]] == [(0.0, 2.0), (2.0, 4.0)]


def test_index_redoes_an_imported_video_it_finds_with_its_own_moments(tmp_path, tiny_model_dir):
    from helpers.videos import make_video, scene

    folder, lib = tmp_path / "media", tmp_path / "lib"
    clip = str(make_video(folder / "clip.mp4", [(scene(1), 3.0)]))
    rows = [{"path": clip, "t": 0.0, "t_end": 1.0}, {"path": clip, "t": 1.0, "t_end": 3.0}]
    assert do_import(lib, tmp_path, "v", vectors(2, seed=4), rows, "--model", tiny_model_dir) == counts(
        imported=2
    )
    imported = {i for i, *_ in video_frames(lib)[clip]}
    (out,) = json_lines(ok("--library", lib, "index", folder, "--json").stdout)
    assert (out["added"], out["updated"], out["removed"]) == (0, 1, 0)  # no file facts yet: redone
    store = Store(lib)
    try:
        got = store.conn.execute("SELECT id, t, mtime_ns FROM items WHERE source = 'video'").fetchall()
    finally:
        store.close()
    assert got and all(m is not None for *_, m in got) and not {i for i, *_ in got} & imported
    assert [t for _, t, _ in got] == [0.0]  # one static shot: one moment of its own


def test_embed_then_import_gives_the_moments_index_stores(tmp_path, tiny_model_dir):
    from helpers.corehelp import stored
    from helpers.videos import three_scenes

    media = tmp_path / "media"
    three_scenes(media / "three.mp4")  # three moments
    make_images(media, ["a.png", "b.png"])
    indexed, imported = tmp_path / "indexed", tmp_path / "imported"
    ok("--library", indexed, "index", media, "--model", tiny_model_dir)
    ok("embed", media, "--out", tmp_path / "emb", "--model", tiny_model_dir, "--shard-size", "2", "--quiet")
    out = ok("--library", imported, "import-embeddings", tmp_path / "emb", "--json", "--quiet")
    assert json.loads(out.stdout) == counts(imported=5)

    def moments(lib: Path) -> list[tuple[float, float, np.ndarray]]:
        ids, vecs = stored(lib, "image")
        by_id = dict(zip(ids.tolist(), vecs))
        store = Store(lib)
        try:
            rows = store.conn.execute("SELECT id, t, t_end FROM items WHERE source = 'video' ORDER BY t")
            return [(t, e, by_id[i]) for i, t, e in rows.fetchall()]
        finally:
            store.close()

    want, got = moments(indexed), moments(imported)
    assert len(want) == len(got) == 3
    for (t, e, v), (t2, e2, v2) in zip(want, got):
        assert (t2, e2) == (t, pytest.approx(e, abs=1e-6)) and np.abs(v - v2).max() < 2e-3
    again = ok("--library", imported, "import-embeddings", tmp_path / "emb", "--json", "--quiet")
    assert json.loads(again.stdout) == counts(unchanged=5)
    with Library.open(imported) as opened:
        hits = opened.search(vector=want[1][2], k=5, filter=Filter(media="videos"))
        assert [(h.t, h.path) for h in hits][0] == (want[1][0], str(media / "three.mp4"))


# ---- large-library mode -----------------------------------------------------------------------
def test_large_library_mode_imports_compares_and_replaces_videos(tmp_path, tiny_model_dir):
    lib, vecs, rows = tmp_path / "lib", vectors(8, seed=0), base_rows()
    got = do_import(lib, tmp_path, "m", vecs, rows, "--model", tiny_model_dir, "--index-type", ONDISK)
    assert got == counts(imported=8, missing_files=5)
    with Library.open(lib) as opened:
        assert opened.info()["mode"] == "large-library"
        blobs = opened.store.conn.execute("SELECT count(*) FROM items WHERE vector IS NOT NULL").fetchone()
        assert blobs == (0,)  # every vector a row of the linked file, the frames' too
    check_first(lib, vecs, rows)
    before = video_frames(lib)
    # float16 rows in the vector file: the same vectors again are unchanged.
    assert do_import(lib, tmp_path, "again", vecs, rows) == counts(unchanged=8, missing_files=5)
    changed = vecs.copy()
    changed[3] = vectors(1, seed=21)[0]  # a frame of B
    assert do_import(lib, tmp_path, "u", changed, rows) == counts(updated=2, unchanged=6, missing_files=5)
    after = video_frames(lib)
    assert after[A] == before[A] and not {i for i, *_ in after[B]} & {i for i, *_ in before[B]}
    with Library.open(lib) as opened:
        hit = opened.search(vector=changed[3], k=1, filter=Filter(media="videos"))[0]
        assert (hit.path, hit.t, hit.t_end) == (B, 0.0, 3.5) and hit.score == pytest.approx(1, abs=2e-3)
        assert opened.search(vector=vecs[3], k=1)[0].score < 0.99
        assert opened.info()["indexes"]["images"]["ntotal"] == 8
    assert json.loads(run("--library", lib, "check", "--json").stdout)["problems"] == []


def test_a_shard_folder_with_frame_rows(tmp_path, tiny_model_dir):
    """`clipdex embed`'s layout: img_emb/img_emb_N.npy + metadata/metadata_N.parquet with t/t_end."""
    root = tmp_path / "emb"
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    vecs, rows = vectors(8, seed=0), base_rows()
    # A video's rows within one shard, contiguous, t ascending (as `embed` writes them).
    shards = [[0, 2, 4, 1, 7], [5, 3, 6]]
    for n, order in enumerate(shards):
        np.save(root / "img_emb" / f"img_emb_{n}.npy", vecs[order].astype(np.float16))
        write_parquet(root / "metadata" / f"metadata_{n}.parquet", [rows[r] for r in order])
    lib = tmp_path / "lib"
    out = ok("--library", lib, "import-embeddings", root, "--model", tiny_model_dir, "--json", "--quiet")
    assert json.loads(out.stdout) == counts(imported=8, missing_files=5)
    check_first(lib, unit(vecs).astype(np.float16).astype(np.float32), rows)
    again = ok("--library", lib, "import-embeddings", root, "--json", "--quiet")
    assert json.loads(again.stdout) == counts(unchanged=8, missing_files=5)
