"""Shared fixtures: tiny random-init open_clip models in local-dir format, temp libraries."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

# Writers under the default runtime (auto) export ONNX graphs once per library (1-2 s for the tiny
# model): the tests of that path ask for it (the `auto_runtime` fixture, or CLIPDEX_RUNTIME=auto in
# a command's env); the rest encode with torch. Set here, so module-scoped fixtures see it too.
os.environ["CLIPDEX_RUNTIME"] = "torch"

# A very small ViT CLIP: fast on 2 CPU cores, but real open_clip code end to end.
TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _tiny_model(factory: pytest.TempPathFactory, name: str, seed: int) -> Path:
    """A random-init tiny model written by clipdex's own `model init` code."""
    from clipdex.retrieval.model_init import init_model

    root = factory.mktemp(name)
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps(TINY_CFG))
    return init_model(str(cfg), root / name, seed=seed)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' tiny model (seed 0)."""
    return _tiny_model(tmp_path_factory, "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model (other seed): a *different* model for refusal tests."""
    return _tiny_model(tmp_path_factory, "tiny-b", seed=1)


@pytest.fixture(scope="session")
def tiny_hf_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' tiny model with a Hugging Face text tower (seed 0)."""
    from helpers.hfhelp import tiny_hf_model

    return tiny_hf_model(tmp_path_factory.mktemp("tiny-hf"))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real data dir or model caches; no hub access in tests."""
    monkeypatch.setenv("CLIPDEX_LIBRARY", str(tmp_path / "default-library"))
    monkeypatch.delenv("CLIPDEX_MODEL", raising=False)
    monkeypatch.delenv("CLIPDEX_DEBUG", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("CLIPDEX_ONNX_CACHE", str(tmp_path / "onnx-cache"))  # eval/embed's exported graphs


@pytest.fixture
def auto_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default runtime (auto): writers export ONNX graphs and encode with ONNX Runtime."""
    monkeypatch.delenv("CLIPDEX_RUNTIME", raising=False)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The files an index run decodes (paths, in any order), recorded as they are opened."""
    import clipdex.retrieval.embed

    calls: list[bytes] = []
    lock = threading.Lock()
    real = clipdex.retrieval.embed.load_and_preprocess

    def counting(path, *args, **kwargs):
        with lock:
            calls.append(os.fsencode(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(clipdex.retrieval.embed, "load_and_preprocess", counting)
    return calls


@pytest.fixture
def client(library: Path, tmp_path: Path):
    """`clipdex serve`'s app over the requesting module's `library` fixture, as a TestClient."""
    from fastapi.testclient import TestClient

    from clipdex.library import Library
    from clipdex.serve.app import create_app

    lib = Library.open(library)
    app = create_app(lib, thumbnails=tmp_path / "thumbs")
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c
    lib.close()
