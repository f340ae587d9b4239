"""Helpers for the end-to-end engine tests (a helper module, not a test).

`run` drives the real click CLI in-process; `make_images` writes small, visually distinct images;
`brute_force` is the reference ranking every search must reproduce.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result
from PIL import Image


def run(*args: object, env: dict | None = None) -> Result:
    """``clipdex ARGS`` in-process; stdout and stderr stay separate (click >= 8.2)."""
    from clipdex.cli.main import cli

    argv = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args]
    return CliRunner().invoke(cli, argv, env=env)


def ok(*args: object, env: dict | None = None) -> Result:
    """``run`` that must exit 0, with both streams in the failure message."""
    result = run(*args, env=env)
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_error_line(result: Result, *needles: str) -> None:
    """Exit 1, stderr is exactly one ``Error: …`` line naming every needle; no traceback anywhere."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in result.stdout + result.stderr


def blocks_image(seed: int, size: int = 64, mode: str = "RGB") -> Image.Image:
    """A 4x4 grid of random colours scaled up: distinct enough for a random tiny model."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.Resampling.NEAREST)
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return img.convert(mode)


def make_images(folder: Path, names: list[str], seed: int = 0, size: int = 64) -> dict[str, Path]:
    """Write one distinct image per name (format from the extension); returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for n, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        blocks_image(seed * 1000 + n, size).save(path)
        out[name] = path
    return out


def indexed_sample(root: Path, model_dir: Path, n: int, seed: int) -> Path:
    """A library at root/lib of ``n`` indexed images (root/imgs/img{i}.png), img1 with a sidecar."""
    make_images(root / "imgs", [f"img{i}.png" for i in range(n)], seed=seed)
    (root / "imgs" / "img1.txt").write_text("a caption")
    ok("--library", root / "lib", "index", root / "imgs", "--model", model_dir, "--quiet")
    return root / "lib"


def brute_force(ids: np.ndarray, vecs: np.ndarray, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Reference ranking: inner products of the stored vectors (float64 sums of each row's products,
    so identical vectors score identically), ties by ascending id."""
    scores = (vecs.astype(np.float64) * np.asarray(query, np.float64)).sum(axis=1)
    order = np.lexsort((ids, -scores))[:k]
    return [(int(ids[j]), float(scores[j])) for j in order]


def stored(lib_dir: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of one kind straight from the library's SQLite store."""
    from clipdex.index.store.database import Store

    store = Store(lib_dir)
    try:
        return store.vectors.all(kind)
    finally:
        store.close()


def path_ids(lib_dir: Path) -> dict[bytes, int]:
    """Stored image path (raw bytes) -> id."""
    from clipdex.index.store.database import Store

    store = Store(lib_dir)
    try:
        return {p: rec.id for p, rec in store.items.image_files().items() if rec.source == "scan"}
    finally:
        store.close()


def tol(device: str = "cpu") -> float:
    """Absolute tolerance for comparing embeddings/scores made on ``device``: CUDA and MPS encode
    under fp16 autocast (~1e-3 relative error per value); CPU encodes in fp32."""
    return 2e-2 if str(device).startswith(("cuda", "mps")) else 1e-5
