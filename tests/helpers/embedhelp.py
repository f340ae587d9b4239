"""Helpers for the `clipdex embed` tests (a helper module, not a test)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from helpers.corehelp import blocks_image, make_images, ok, stored
from PIL import Image


def photo_folder(root: Path, n: int = 9) -> Path:
    """JPEGs and PNGs in two folders, one big JPEG (draft-decoded), a caption, a corrupt file."""
    folder = root / "photos"
    make_images(folder, [f"a{i}.jpg" for i in range(n // 2)] + [f"sub/b{i}.png" for i in range(n - n // 2)])
    blocks_image(99, size=200).save(folder / "big.jpg")  # >= 2x the tiny model's 64 px: draft path
    (folder / "a1.txt").write_text("a red square\n")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def index_vectors(lib: Path, folder: Path, model: Path) -> dict[str, np.ndarray]:
    """`clipdex index` the folder; returns path -> stored float32 vector."""
    from clipdex.index.store.database import Store

    ok("--library", lib, "index", folder, "--model", model)
    ids, vecs = stored(lib, "image")
    store = Store(lib)
    try:
        by_id = {
            rec.id: os.fsdecode(p) for p, rec in store.items.image_files().items() if rec.source == "scan"
        }
    finally:
        store.close()
    return {by_id[int(i)]: v for i, v in zip(ids, vecs)}


def read_shards(out: Path) -> tuple[list[dict], np.ndarray, list[dict]]:
    """(metadata rows, float16 vectors, failed rows) over all shards, in shard order."""
    import pyarrow.parquet as pq

    rows, vecs, failed = [], [], []
    for npy in sorted((out / "img_emb").glob("img_emb_*.npy")):
        tail = npy.name[len("img_emb_") : -4]
        v = np.load(npy)
        meta = pq.read_table(out / "metadata" / f"metadata_{tail}.parquet").to_pylist()
        assert v.dtype == np.float16 and v.shape[0] == len(meta), (npy, v.shape, len(meta))
        rows += meta
        vecs.append(v)
        failed += pq.read_table(out / "failed" / f"failed_{tail}.parquet").to_pylist()
    return rows, np.concatenate(vecs), failed


def capture_float32(monkeypatch) -> dict[str, np.ndarray]:
    """Record the float32 vectors every shard write receives (before its float16 cast), by path."""
    from clipdex.scale.shards import ShardDir

    seen: dict[str, np.ndarray] = {}
    real = ShardDir.write_shard

    def spy(self, index, vectors, meta, failed):
        for path, v in zip(meta["path"], vectors):
            assert path not in seen, f"{path} written twice"
            seen[path] = np.array(v, np.float32)
        return real(self, index, vectors, meta, failed)

    monkeypatch.setattr(ShardDir, "write_shard", spy)
    return seen


def assert_same_as_index(ref: dict[str, np.ndarray], f32: dict[str, np.ndarray], out: Path) -> None:
    """Float32 within 1e-5 of `index`'s; float16 files within one float16 step of index's cast."""
    rows, half, _ = read_shards(out)
    assert sorted(f32) == sorted(ref) == sorted(r["path"] for r in rows)
    for path, v in f32.items():
        assert np.abs(v - ref[path]).max() <= 1e-5, path
    for row, h in zip(rows, half):
        want = ref[row["path"]].astype(np.float16)
        step = np.spacing(np.abs(want)).astype(np.float32)
        assert (np.abs(h.astype(np.float32) - want.astype(np.float32)) <= step).all(), row["path"]


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def assert_f16_close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal within one float16 step (the same vectors from batches of other sizes)."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    step = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float16)).astype(np.float32)
    assert a.shape == b.shape and (np.abs(a32 - b32) <= step).all()


def encode_images(lm, images, batch_size: int = 64) -> np.ndarray:
    """PIL RGB images -> (N, D) unit vectors with the model's own transform: the tests' reference."""
    import torch

    from clipdex.retrieval.embed import encode_image_batch

    out = [np.zeros((0, lm.embed_dim), np.float32)]
    images = list(images)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        out.append(encode_image_batch(lm, torch.stack([lm.preprocess(im) for im in batch])))
    return np.concatenate(out)
