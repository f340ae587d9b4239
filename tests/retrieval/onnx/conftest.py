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
