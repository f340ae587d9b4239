"""`clipdex embed --ray` on a local Ray cluster: same vectors as `index`, a killed actor, resume.

One small cluster for the module (4 logical CPUs on this 2-core machine: 2 encoder actors plus
2 decode tasks); the heavy versions of these runs belong in bench/.
"""

from __future__ import annotations

import json
import os

import pytest
from helpers.corehelp import ok
from helpers.embedhelp import assert_same_as_index, capture_float32, index_vectors, photo_folder, read_shards

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    import ray

    from clipdex.scale.ray_job import FAULT_ENV

    token = tmp_path_factory.mktemp("fault") / "kill-one-encoder"
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", FAULT_ENV)}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ[FAULT_ENV] = str(token)  # workers inherit it; an actor dies only while the file exists
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        yield token
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_ray_embed_equals_index_and_resumes_an_in_process_job(
    ray_cluster, tmp_path, tiny_model_dir, monkeypatch
):
    from clipdex.scale.run import run_embed

    photos = photo_folder(tmp_path)
    ref = index_vectors(tmp_path / "lib", photos, tiny_model_dir)
    out = tmp_path / "emb"

    def stop(index: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # an in-process job interrupted after its first shard
        run_embed([str(photos)], out, model=str(tiny_model_dir), shard_size=4, on_shard=stop)
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*_00000.*")}
    assert len(first) == 3
    f32 = capture_float32(monkeypatch)
    # The actors encode on ONNX Runtime (each exports the graphs into the cache once); the vectors
    # still equal torch's `index` within 1e-5. (The killed-actor test below runs torch actors.)
    monkeypatch.setenv("CLIPDEX_ONNX_CACHE", str(tmp_path / "cache"))
    r = ok("embed", photos, "--out", out, "--model", tiny_model_dir, "--shard-size", "4", "--batch-size", "2",
           "--ray", "--actors", "2", "--runtime", "onnx", "--json")  # fmt: skip
    want = {
        "files": 11,
        "embedded": 10,
        "failed": 1,
        "frames": 0,
        "shards": 3,
        "shards_written": 2,
        "shards_skipped": 1,
    }
    assert json.loads(r.stdout) == want
    assert "2 encoder actors" in r.stderr
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*_00000.*")} == first
    written = {k: v for k, v in ref.items() if k in f32}  # the shards Ray wrote
    assert len(written) == len(f32) >= 6
    assert_same_as_index(ref, f32 | {k: v for k, v in ref.items() if k not in f32}, out)
    rows, _, failed = read_shards(out)
    assert [f["path"] for f in failed] == [str(photos / "broken.jpg")]
    assert list((tmp_path / "cache").glob("onnx-*/image.onnx"))


def test_a_killed_actor_loses_and_duplicates_nothing(ray_cluster, tmp_path, tiny_model_dir, monkeypatch):
    from clipdex.retrieval.models import load_model, resolve_spec
    from clipdex.scale.run import run_embed

    folder = tmp_path / "imgs"
    from helpers.corehelp import make_images

    make_images(folder, [f"p{n:02d}.png" for n in range(12)])
    f32 = capture_float32(monkeypatch)
    ray_cluster.write_text("armed")
    stats = run_embed([str(folder)], tmp_path / "emb", model=str(tiny_model_dir), ray="local", actors=2,
                      shard_size=5, batch_size=2)  # fmt: skip
    assert not ray_cluster.exists()  # an encoder actor did die mid-run (its second batch)
    assert (stats.files, stats.embedded, stats.failed, stats.shards_written) == (12, 12, 0, 3)
    rows, _, failed = read_shards(tmp_path / "emb")
    assert failed == [] and sorted(r["path"] for r in rows) == sorted(str(p) for p in folder.iterdir())
    assert len({r["path"] for r in rows}) == 12  # every file exactly once
    # And the retried batch's vectors are the right ones.
    import numpy as np
    from helpers.embedhelp import encode_images
    from PIL import Image

    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    paths = sorted(folder.iterdir())
    want = encode_images(lm, [Image.open(p).convert("RGB") for p in paths])
    for p, w in zip(paths, want):
        assert np.abs(f32[str(p)] - w).max() <= 1e-5, p


def test_ray_embeds_videos_as_the_in_process_run_does(ray_cluster, tmp_path, tiny_model_dir):
    import numpy as np
    from helpers.corehelp import make_images
    from helpers.videos import make_video, scene, three_scenes

    from clipdex.scale.run import run_embed

    media = tmp_path / "media"
    three_scenes(media / "three.mp4")
    make_video(media / "static.mp4", [(scene(0), 12.0)])
    make_images(media, ["a.png"])
    (media / "fake.mp4").write_text("not a video\n" * 20)
    good = three_scenes(tmp_path / "good.mkv").read_bytes()
    (media / "cut.mkv").write_bytes(good[: len(good) // 2])  # frames stream out, then it fails
    local = run_embed([str(media)], tmp_path / "local", model=str(tiny_model_dir), shard_size=2)
    # Batches of 2: a video's frames stream out of its decode task over several batches and actors.
    remote = run_embed([str(media)], tmp_path / "ray", model=str(tiny_model_dir), ray="local", actors=2,
                       shard_size=2, batch_size=2)  # fmt: skip
    assert (remote.files, remote.embedded, remote.frames, remote.failed) == (5, 5, 4, 2)
    assert (local.embedded, local.frames, local.failed) == (5, 4, 2)
    (want, want_vecs, want_failed), (got, got_vecs, got_failed) = (
        read_shards(tmp_path / "local"), read_shards(tmp_path / "ray")
    )  # fmt: skip
    assert got == want and got_failed == want_failed
    assert "truncated" in next(f["error"] for f in got_failed if f["path"].endswith("cut.mkv"))
    assert [(r["t"], r["t_end"]) for r in got if r["path"].endswith("three.mp4")] == [(0.0, 4.0), (4.0, 8.0),
                                                                                    (8.0, 12.0)]  # fmt: skip
    assert np.abs(got_vecs.astype(np.float32) - want_vecs.astype(np.float32)).max() <= 2e-3
