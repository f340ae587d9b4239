"""Shared by the bench scripts: clustered unit vectors (well separated: `mixture`; hard for an
index: `hard_mixture`), and a library made of them by import."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def mixture(n: int, d: int, seed: int = 0) -> np.ndarray:
    """(n, d) unit vectors from a Gaussian mixture on the sphere (n/100 centres, 1,000-10,000)."""
    rng = np.random.default_rng(seed)
    nc = int(min(10_000, max(1_000, n // 100)))
    centres = rng.standard_normal((nc, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        noise = rng.standard_normal((e - s, d), np.float32)
        x = centres[rng.integers(0, nc, e - s)] + 0.8 / np.sqrt(d) * noise
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def hard_mixture(
    n: int, dim: int, latent: int, seed: int, library_size: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """(n, dim) unit rows, hard for an index: a Gaussian mixture in a `latent`-dim space
    (library_size/200 centres, wide spread) randomly projected to `dim` dims, plus isotropic
    noise. Neighbours are not well separated: IVF needs tens of probes for recall 0.95.

    The mixture (centres, projection) depends on `seed` and `library_size` (default n) only: rows
    drawn with the same two come from the same distribution, whatever n. Written into `out` (any
    float dtype, e.g. a float16 memory map) when given, 100k rows at a time.
    """
    rng = np.random.default_rng(seed)
    nc = max(50, (n if library_size is None else library_size) // 200)
    centres = rng.standard_normal((nc, latent)).astype(np.float32)
    proj = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    out = np.empty((n, dim), np.float32) if out is None else out
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        z = centres[rng.integers(0, nc, e - s)] + 0.7 * rng.standard_normal((e - s, latent), np.float32)
        x = z @ proj + 0.6 * rng.standard_normal((e - s, dim), np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def import_library(work: Path, vectors: np.ndarray, paths: list[str]):
    """A new library at work/lib holding `vectors` as images at `paths` (via import-embeddings),
    tied to a random-init local-dir model of the right dimension (no download)."""
    from clipdex.library import Library
    from clipdex.retrieval.model_init import init_model

    d = vectors.shape[1]
    cfg = work / "model.json"
    cfg.write_text(json.dumps({
        "embed_dim": d,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }))  # fmt: skip
    model_dir = init_model(str(cfg), work / "model", seed=0)
    np.save(work / "vectors.npy", vectors)
    with open(work / "meta.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"])
        w.writerows([p] for p in paths)
    lib = Library.open(work / "lib", create=True, model=f"local-dir:{model_dir}", device="cpu")
    lib.import_embeddings(work / "vectors.npy", work / "meta.csv")
    lib.close()
    return work / "lib"
