"""Fixtures for the ONNX path: the tests' tiny model loaded once, and exported once (fp32 + int8)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir: Path):
    """The tiny model (tests/conftest.py's ``tiny_model_dir``) loaded on the CPU by clipdex."""
    from clipdex.retrieval.models import load_model, resolve_spec

    return load_model(resolve_spec(f"local-dir:{tiny_model_dir}"), "cpu")


@pytest.fixture(scope="session")
def exported(tiny_lm, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(graph folder, manifest) of the tiny model exported with int8 graphs, once per session."""
    from clipdex.retrieval.onnx.export import export_model

    folder = tmp_path_factory.mktemp("onnx-export") / "tiny-onnx"
    return folder, export_model(tiny_lm, folder, int8=True)


def probe_pictures(n: int = 5, size: int = 64) -> list:
    """Seeded RGB pictures of varied shapes (the child process of test_torch_free makes the same)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(123)
    shapes = [(size, size), (size * 2, size + 9), (31, 200), (size * 3, size * 3), (1, 1)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes[:n]]
