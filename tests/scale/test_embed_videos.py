"""`clipdex embed` on videos: a row per moment, the same moments and vectors as `index`, bad
videos as failures, `--no-video`, `--video-interval`; the builder's frame bookkeeping."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import assert_one_error_line, make_images, ok, run, stored
from helpers.embedhelp import read_shards
from helpers.videos import audio_only, make_video, scene, three_scenes

from clipdex.index.store.database import Store


def index_moments(lib: Path, folder: Path, model: Path) -> dict[tuple[str, float], tuple[float, np.ndarray]]:
    """`clipdex index` the folder; (video path, t) -> (t_end, stored vector) of every moment."""
    ok("--library", lib, "index", folder, "--model", model)
    ids, vecs = stored(lib, "image")
    by_id = dict(zip(ids.tolist(), vecs))
    store = Store(lib)
    try:
        rows = store.conn.execute("SELECT id, path, t, t_end FROM items WHERE source = 'video'").fetchall()
    finally:
        store.close()
    return {(os.fsdecode(bytes(p)), t): (e, by_id[i]) for i, p, t, e in rows}


def capture_moments(monkeypatch) -> dict[tuple[str, float | None], np.ndarray]:
    """The float32 vectors every shard write receives (before the float16 cast), by (path, t)."""
    from clipdex.scale.shards import ShardDir

    seen: dict[tuple[str, float | None], np.ndarray] = {}
    real = ShardDir.write_shard

    def spy(self, index, vectors, meta, failed):
        for key, v in zip(zip(meta["path"], meta["t"]), vectors):
            assert key not in seen, f"{key} written twice"
            seen[key] = np.array(v, np.float32)
        return real(self, index, vectors, meta, failed)

    monkeypatch.setattr(ShardDir, "write_shard", spy)
    return seen


@pytest.fixture
def media(tmp_path) -> Path:
    root = tmp_path / "media"
    three_scenes(root / "three.mp4")  # scenes 2, 4, 5 at 0, 4 and 8 s: three moments
    make_video(root / "sub" / "static.mp4", [(scene(0), 20.0)])  # one shot: one moment
    make_images(root, ["a.png", "sub/b.png"])
    (root / "notes.mkv").write_text("this is text\n" * 30)  # a video by name only
    return root


def test_embed_writes_the_moments_index_stores(tmp_path, media, tiny_model_dir, monkeypatch):
    ref = index_moments(tmp_path / "lib", media, tiny_model_dir)
    assert len(ref) == 4
    f32 = capture_moments(monkeypatch)
    out = tmp_path / "emb"
    r = ok("embed", media, "--out", out, "--model", tiny_model_dir, "--shard-size", "2", "--batch-size", "2",
           "--json")  # fmt: skip
    stats = json.loads(r.stdout)
    assert stats == {"files": 5, "embedded": 6, "failed": 1, "frames": 4, "shards": 3, "shards_written": 3,
                     "shards_skipped": 0}  # fmt: skip
    problems = [line for line in r.stderr.splitlines() if "skipped" in line]
    assert len(problems) == 1 and "notes.mkv" in problems[0] and "not a video" in problems[0]
    rows, half, failed = read_shards(out)
    assert [os.path.basename(f["path"]) for f in failed] == ["notes.mkv"]
    videos = [(r["path"], r["t"], r["t_end"]) for r in rows if r["t"] is not None]
    want = sorted((p, t, e) for (p, t), (e, _) in ref.items())
    assert [(p, t) for p, t, _ in videos] == [(p, t) for p, t, _ in want]  # listing order, time order
    for (_, _, got), (_, _, e) in zip(videos, want):
        assert got == pytest.approx(e, abs=1e-6)
    for key, (_, v) in ref.items():
        assert np.abs(f32[key] - v).max() <= 1e-5, key
    static = [r for r in rows if r["path"].endswith("static.mp4")]
    assert len(static) == 1 and static[0]["t"] == 0.0 and static[0]["t_end"] == pytest.approx(20.0, abs=0.3)
    st = os.stat(media / "three.mp4")
    three = [r for r in rows if r["path"].endswith("three.mp4")]
    assert {(r["size"], r["width"], r["height"], r["caption"]) for r in three} == {(st.st_size, 96, 64, None)}
    assert [r["t"] for r in rows if r["path"].endswith(".png")] == [None, None]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["frames"] == 4 and manifest["video_interval"] == 2.0
    assert sum(s["frames"] for s in manifest["shards"]) == 4


def test_no_video_and_video_interval(tmp_path, media, tiny_model_dir):
    r = ok("embed", media, "--out", tmp_path / "photos", "--model", tiny_model_dir, "--no-video", "--json")
    stats = json.loads(r.stdout)
    assert (stats["files"], stats["embedded"], stats["frames"], stats["failed"]) == (2, 2, 0, 0)
    out = tmp_path / "emb"
    r = ok("embed", media / "three.mp4", "--out", out, "--model", tiny_model_dir, "--video-interval", "4",
           "--json")  # fmt: skip
    rows, _, _ = read_shards(out)
    assert [r["t"] for r in rows] == [0.0, 4.0, 8.0]  # a frame every 4 s: no two alike to merge
    again = run("embed", media / "three.mp4", "--out", out, "--model", tiny_model_dir)
    assert_one_error_line(again, "--video-interval 4.0", "same or a new --out")


def test_bad_videos_fail_whole_with_index_s_reasons(tmp_path, tiny_model_dir):
    from PIL import Image

    root = tmp_path / "bad"
    good = three_scenes(tmp_path / "good.mkv").read_bytes()
    root.mkdir()
    (root / "zero.mp4").write_bytes(b"")
    (root / "truncated.mkv").write_bytes(good[: len(good) // 2])  # two frames decode, then the error
    audio_only(root / "sound.mp4")
    Image.new("RGB", (16, 16), "red").save(root / "picture.webm", format="PNG")
    (root / os.fsdecode(b"name\xff.mkv")).write_bytes(good)  # a good video parquet cannot name
    r = ok("embed", root, "--out", tmp_path / "emb", "--model", tiny_model_dir, "--batch-size", "1", "--json")
    assert json.loads(r.stdout)["embedded"] == 0
    rows, _, failed = read_shards(tmp_path / "emb")
    assert rows == []  # no half video: the truncated one's decoded frames are dropped
    reasons = {os.path.basename(f["path"]): f["error"] for f in failed}
    for name, needle in [("zero.mp4", "empty"), ("truncated.mkv", "truncated"), ("sound.mp4", "audio only"),
                         ("picture.webm", "PNG"), ("name\\xff.mkv", "not valid UTF-8")]:  # fmt: skip
        assert needle in reasons[name], (name, reasons)
    assert len([line for line in r.stderr.splitlines() if "skipped" in line]) == 5
    assert "Traceback" not in r.stderr


def test_a_video_url_is_one_clear_failure(tmp_path, tiny_model_dir):
    pytest.importorskip("fsspec")
    (tmp_path / "list.txt").write_text("memory://clips/a.mp4\n")
    r = ok("embed", tmp_path / "list.txt", "--out", tmp_path / "emb", "--model", tiny_model_dir, "--json")
    _, _, failed = read_shards(tmp_path / "emb")
    assert failed == [{"path": "memory://clips/a.mp4",
                       "error": "videos are embedded from local or mounted files, not URLs"}]  # fmt: skip
    assert json.loads(r.stdout)["failed"] == 1


# ---- the builder: frames in any order, retries, failures after frames -----------------------------
def _builder(n: int):
    from clipdex.scale.builder import ShardBuilder
    from clipdex.scale.job import Shard
    from clipdex.scale.sources import Entry

    return ShardBuilder(Shard(0, [Entry(f"/v{i}.mp4") for i in range(n)]), 2)


def _facts(end: float):
    from clipdex.scale.load_video import VideoFacts

    return VideoFacts(10, 1.0, 4, 2, None, end)


def test_builder_merges_frames_in_any_order_once(tmp_path):
    from clipdex.scale.shards import ShardDir

    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    build = _builder(2)
    assert not build.put_frame(0, 2, 4.0, b)
    assert not build.end_video(0, 3, _facts(6.0))  # the end can come before the last frames
    assert not build.put_frame(0, 2, 4.0, b)  # a retried batch: the same frame again
    assert not build.put_frame(0, 0, 0.0, a)
    assert build.put_frame(0, 1, 2.0, a)  # alike the first: merged into its span
    assert not build.put_frame(0, 1, 2.0, a)  # a finished video takes nothing more
    assert build.put_frame(1, 0, 0.0, a) is False and build.fail(1, "damaged video at 0:02")
    assert not build.put_frame(1, 1, 2.0, b) and not build.end_video(1, 2, _facts(4.0))  # late: dropped
    assert build.complete
    rows, failed, frames = build.write(ShardDir(tmp_path / "out"))
    assert (rows, failed, frames) == (2, 1, 2)
    got, vecs, bad = read_shards(tmp_path / "out")
    assert [(r["path"], r["t"], r["t_end"]) for r in got] == [("/v0.mp4", 0.0, 4.0), ("/v0.mp4", 4.0, 6.0)]
    assert np.allclose(vecs, [a, b])
    assert bad == [{"path": "/v1.mp4", "error": "damaged video at 0:02"}]


def test_video_progress_follows_the_decode_in_seconds(tmp_path, media, tiny_model_dir):
    from clipdex import Library
    from clipdex.scale.run import run_embed

    static = media / "sub" / "static.mp4"  # 20 s at 4 fps: a call every 16 frames decoded
    seen: dict[str, list] = {"embed": [], "index": []}
    run_embed([str(static)], tmp_path / "emb", model=str(tiny_model_dir),
              video_progress=lambda done, total: seen["embed"].append((done, total)))  # fmt: skip
    with Library.open(tmp_path / "lib", create=True, model=str(tiny_model_dir)) as lib:
        lib.index(static.parent, video_progress=lambda done, total: seen["index"].append((done, total)))
    for name, calls in seen.items():
        assert calls == [(3, 20), (7, 20), (11, 20), (15, 20), (19, 20)], (name, calls)  # frame 16: t 3.75 s
