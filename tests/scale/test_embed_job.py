"""`clipdex embed` in-process: same vectors as `index`, shard layout, sources, resume, refusals."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import assert_one_error_line, make_images, ok, run
from helpers.embedhelp import (
    assert_f16_close,
    assert_same_as_index,
    capture_float32,
    image_size,
    index_vectors,
    photo_folder,
    read_shards,
)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return photo_folder(tmp_path)


def test_embed_equals_index_and_writes_clip_retrieval_layout(tmp_path, photos, tiny_model_dir, monkeypatch):
    ref = index_vectors(tmp_path / "lib", photos, tiny_model_dir)
    f32 = capture_float32(monkeypatch)
    out = tmp_path / "emb"
    r = ok("embed", photos, "--out", out, "--model", tiny_model_dir, "--shard-size", "4", "--json")
    stats = json.loads(r.stdout)
    assert stats == {"files": 11, "embedded": 10, "failed": 1, "frames": 0, "shards": 3, "shards_written": 3,
                     "shards_skipped": 0}  # fmt: skip
    assert "broken.jpg" in r.stderr
    assert_same_as_index(ref, f32, out)
    rows, _, failed = read_shards(out)
    # Shards are slices of the sorted listing; failures are listed apart, not as vector rows.
    listing = sorted([*ref, str(photos / "broken.jpg")])
    assert [r["path"] for r in rows] == [p for p in listing if not p.endswith("broken.jpg")]
    assert [f["path"] for f in failed] == [str(photos / "broken.jpg")]
    assert "not an image" in failed[0]["error"] or "corrupt" in failed[0]["error"]
    by_path = {r["path"]: r for r in rows}
    assert by_path[str(photos / "a1.jpg")]["caption"] == "a red square"
    assert by_path[str(photos / "a2.jpg")]["caption"] is None
    big = by_path[str(photos / "big.jpg")]
    assert (big["width"], big["height"]) == image_size(photos / "big.jpg") == (200, 200)
    st = os.stat(photos / "sub" / "b0.png")
    assert by_path[str(photos / "sub" / "b0.png")]["size"] == st.st_size
    assert abs(by_path[str(photos / "sub" / "b0.png")]["mtime"] - st.st_mtime) < 1e-3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dim"] == 64 and manifest["shard_size"] == 4 and manifest["complete"] is True
    assert manifest["model"]["name"] == f"local-dir:{tiny_model_dir.resolve()}"
    assert manifest["counts"] == {"files": 11, "embedded": 10, "failed": 1, "frames": 0, "shards": 3}
    assert [s["files"] for s in manifest["shards"]] == [4, 4, 3]
    assert sum(s["embedded"] for s in manifest["shards"]) == 10


def test_list_files_and_single_images_give_the_folder_scans_vectors(tmp_path, photos, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ok("embed", photos, "--out", tmp_path / "ref", "--model", tiny_model_dir, "--shard-size", "100")
    ref_rows, ref_vecs, _ = read_shards(tmp_path / "ref")
    want = {r["path"]: (v, r["caption"]) for r, v in zip(ref_rows, ref_vecs)}
    paths = sorted(want)
    lists = tmp_path / "lists"
    lists.mkdir()
    # .txt with paths relative to the list's folder, .csv with an image_path column, .parquet with `path`.
    (lists / "a.txt").write_text("".join(os.path.relpath(p, lists) + "\n" for p in paths[:3]) + "\n")
    (lists / "b.csv").write_text("image_path,other\n" + "".join(f"{p},x\n" for p in paths[3:6]))
    pq.write_table(pa.table({"path": paths[6:8] + [str(tmp_path / "gone.jpg")]}), lists / "c.parquet")
    r = ok("embed", lists / "a.txt", lists / "b.csv", lists / "c.parquet", *paths[8:], "--out",
           tmp_path / "emb", "--model", tiny_model_dir, "--json")  # fmt: skip
    assert json.loads(r.stdout)["failed"] == 1
    rows, vecs, failed = read_shards(tmp_path / "emb")
    assert failed == [{"path": str(tmp_path / "gone.jpg"), "error": "file not found"}]
    assert [r["path"] for r in rows] == paths
    for row, v in zip(rows, vecs):
        assert_f16_close(v, want[row["path"]][0])
        assert row["caption"] == want[row["path"]][1]  # sidecars found beside listed files too


def test_fsspec_urls(tmp_path, photos, tiny_model_dir, monkeypatch):
    import fsspec

    ok("embed", photos, "--out", tmp_path / "ref", "--model", tiny_model_dir)
    ref_rows, ref_vecs, _ = read_shards(tmp_path / "ref")
    fs = fsspec.filesystem("memory")
    for p in [photos / "a0.jpg", photos / "a1.jpg", photos / "a1.txt", photos / "big.jpg"]:
        fs.pipe(f"/bucket/imgs/{p.name}", p.read_bytes())
    try:
        r = ok(
            "embed", "memory://bucket/imgs", "--out", tmp_path / "emb", "--model", tiny_model_dir, "--json"
        )
        rows, vecs, _ = read_shards(tmp_path / "emb")
    finally:
        fs.rm("/bucket", recursive=True)
    assert json.loads(r.stdout)["embedded"] == 3
    want = {Path(r["path"]).name: (v, r) for r, v in zip(ref_rows, ref_vecs)}
    assert [r["path"] for r in rows] == [
        f"memory:///bucket/imgs/{n}" for n in ("a0.jpg", "a1.jpg", "big.jpg")
    ]
    for row, v in zip(rows, vecs):
        name = row["path"].rsplit("/", 1)[1]
        assert_f16_close(v, want[name][0])
        assert (row["caption"], row["width"], row["size"]) == (
            want[name][1]["caption"], want[name][1]["width"], want[name][1]["size"])  # fmt: skip
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if not installed
    assert_one_error_line(
        run("embed", "s3://bucket/x", "--out", tmp_path / "e3", "--model", tiny_model_dir), "fsspec"
    )


def _shard_files(out: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.rglob("*_0*.*"))
    }


def test_resume_writes_only_the_missing_shards(tmp_path, tiny_model_dir):
    from clipdex.scale.run import run_embed

    folder = tmp_path / "imgs"
    make_images(folder, [f"i{n:02d}.png" for n in range(10)])
    out = tmp_path / "emb"
    ok("embed", folder, "--out", tmp_path / "ref", "--model", tiny_model_dir, "--shard-size", "3")

    def stop_after_two(index: int) -> None:
        if len(list((out / "metadata").glob("*.parquet"))) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_embed([str(folder)], out, model=str(tiny_model_dir), shard_size=3, batch_size=2,
                  on_shard=stop_after_two)  # fmt: skip
    before = _shard_files(out)
    assert len([k for k in before if k.startswith("metadata")]) == 2
    leftover = out / "img_emb" / ".img_emb_00002.npy.x1y2.tmp"  # a write cut short by a crash
    leftover.write_bytes(b"partial")
    r = ok("embed", folder, "--out", out, "--model", tiny_model_dir, "--shard-size", "3", "--json")
    assert json.loads(r.stdout) == {"files": 10, "embedded": 10, "failed": 0, "frames": 0, "shards": 4,
                                         "shards_written": 2, "shards_skipped": 2}  # fmt: skip
    after = _shard_files(out)
    assert {k: after[k] for k in before} == before  # finished shards untouched (same inode, mtime)
    assert not leftover.exists()
    assert len(after) == 12
    rows, vecs, _ = read_shards(out)
    ref_rows, ref_vecs, _ = read_shards(tmp_path / "ref")
    assert rows == ref_rows
    assert_f16_close(vecs, ref_vecs)
    # A shard cut between its renames (vectors there, metadata not) is redone, alone.
    kept = {k: v for k, v in after.items() if "00001" not in k}
    (out / "metadata" / "metadata_00001.parquet").unlink()
    r = ok("embed", folder, "--out", out, "--model", tiny_model_dir, "--shard-size", "3", "--json")
    assert (json.loads(r.stdout)["shards_written"], json.loads(r.stdout)["embedded"]) == (1, 10)
    after = _shard_files(out)
    assert {k: v for k, v in after.items() if "00001" not in k} == kept
    # A new file sorting last changes only the last shard's inputs: only that shard is rewritten.
    make_images(folder, ["z.png"], seed=5)
    r = ok("embed", folder, "--out", out, "--model", tiny_model_dir, "--shard-size", "3", "--json")
    assert (json.loads(r.stdout)["shards_written"], json.loads(r.stdout)["embedded"]) == (1, 11)
    again = _shard_files(out)
    assert {k: again[k] for k in after if "00003" not in k} == {
        k: v for k, v in after.items() if "00003" not in k
    }


def test_refusals(tmp_path, photos, tiny_model_dir, tiny_model_dir2, monkeypatch):
    out = tmp_path / "emb"
    ok("embed", photos, "--out", out, "--model", tiny_model_dir)
    assert_one_error_line(run("embed", photos, "--out", out, "--model", tiny_model_dir2), "model")
    assert_one_error_line(
        run("embed", photos, "--out", out, "--model", tiny_model_dir, "--shard-size", "7"), "--shard-size"
    )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert_one_error_line(run("embed", photos, "--out", busy, "--model", tiny_model_dir), "not empty")
    assert (busy / "notes.txt").read_text() == "mine"
    assert_one_error_line(
        run("embed", tmp_path / "nope", "--out", out, "--model", tiny_model_dir), "not found"
    )
    (tmp_path / "x.doc").write_text("?")
    assert_one_error_line(run("embed", tmp_path / "x.doc", "--out", out, "--model", tiny_model_dir), "list")
    monkeypatch.setitem(sys.modules, "ray", None)
    assert_one_error_line(
        run("embed", photos, "--out", out, "--model", tiny_model_dir, "--ray"), "clipdex[scale]"
    )
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert_one_error_line(run("embed", photos, "--out", out, "--model", tiny_model_dir), "clipdex[scale]")
    assert_one_error_line(run("--library", tmp_path / "lib", "import-embeddings", out), "clipdex[scale]")


def test_a_bad_caption_file_leaves_the_image_embedded_without_a_caption(tmp_path, tiny_model_dir):
    """Like `index`: a .txt that cannot be a caption (NUL bytes) is ignored, the image is kept."""
    import fsspec

    folder = tmp_path / "imgs"
    make_images(folder, ["good.png", "nul.png"])
    (folder / "good.txt").write_text("a caption")
    (folder / "nul.txt").write_bytes(b"text\0with a NUL")
    fs = fsspec.filesystem("memory")
    for p in sorted(folder.iterdir()):
        fs.pipe(f"/badcap/{p.name}", p.read_bytes())
    try:
        for source, out in [(folder, tmp_path / "local"), ("memory://badcap", tmp_path / "remote")]:
            r = ok("embed", source, "--out", out, "--model", tiny_model_dir, "--json")
            assert json.loads(r.stdout)["embedded"] == 2, source
            rows, vecs, failed = read_shards(out)
            assert failed == []
            by_name = {row["path"].rsplit("/", 1)[1]: (row, v) for row, v in zip(rows, vecs)}
            assert by_name["good.png"][0]["caption"] == "a caption"
            assert by_name["nul.png"][0]["caption"] is None
            assert np.abs(by_name["nul.png"][1].astype(np.float32)).sum() > 0  # a real vector
    finally:
        fs.rm("/badcap", recursive=True)


def test_embed_on_onnx_runtime_equals_index(tmp_path, photos, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("CLIPDEX_ONNX_CACHE", str(tmp_path / "cache"))
    ref = index_vectors(tmp_path / "lib", photos, tiny_model_dir)  # torch
    f32 = capture_float32(monkeypatch)
    out = tmp_path / "emb"
    r = ok("embed", photos, "--out", out, "--model", tiny_model_dir, "--runtime", "onnx", "--json")
    assert json.loads(r.stdout)["embedded"] == 10 and "exporting model" in r.stderr
    assert_same_as_index(ref, f32, out)  # ONNX Runtime's vectors within 1e-5 of torch's
    assert len(list((tmp_path / "cache").glob("onnx-*/image.onnx"))) == 1
