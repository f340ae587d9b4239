"""The ONNX path for a Hugging Face text tower: the torch-free tokenizer gives open_clip's ids, the
graphs give torch's vectors, and a process without torch encodes Chinese and emoji queries."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers.hfhelp import TEXTS

from clipdex.retrieval.embed import encode_texts
from clipdex.retrieval.onnx import twins as tk
from clipdex.retrieval.onnx.export import PROBE_TEXTS, export_model

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def hf_lm(tiny_hf_model_dir: Path):
    from clipdex.retrieval.models import load_model, resolve_spec

    return load_model(resolve_spec(str(tiny_hf_model_dir)), "cpu")


@pytest.fixture(scope="module")
def hf_exported(hf_lm, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("hf-onnx") / "graphs"
    return folder, export_model(hf_lm, folder)


def test_twin_gives_open_clips_ids(hf_lm, tmp_path: Path) -> None:
    twin = tk.twin_of(hf_lm.tokenizer)
    texts = [*TEXTS, *PROBE_TEXTS, "x" * 300, "狗" * 100]
    assert np.array_equal(twin(texts), hf_lm.tokenizer(texts).numpy())
    again = tk.load_tokenizer(tmp_path, twin.save(tmp_path))  # as an OnnxEncoder reads it back
    assert np.array_equal(again(texts), twin(texts))
    assert twin(texts).shape == (len(texts), 32)


def test_export_agrees_with_torch_and_records_the_tokenizer(hf_exported, hf_lm) -> None:
    from clipdex.retrieval.onnx.encoder import OnnxEncoder

    folder, manifest = hf_exported
    assert manifest["tokenizer"]["kind"] == "hf-tokenizers"
    assert (
        manifest["tokenizer_record"]["kind"] == "hf" and manifest["tokenizer_record"]["context_length"] == 32
    )
    assert min(manifest["fp32_min_cosine"].values()) >= 0.99999
    cos = np.sum(OnnxEncoder(folder).encode_texts(TEXTS) * encode_texts(hf_lm, TEXTS), axis=1)
    assert cos.min() >= 0.99999, cos


CHILD = textwrap.dedent(
    """
    import sys
    for name in ("torch", "torchvision", "open_clip", "transformers"):
        sys.modules[name] = None  # any import of them now raises ImportError
    import numpy as np
    from clipdex.retrieval.onnx.encoder import OnnxEncoder

    folder, out = sys.argv[1:3]
    np.save(out, OnnxEncoder(folder).encode_texts(sys.stdin.read().split("\\x00")))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "transformers")
                    and sys.modules[m] is not None)
    print("torch-like modules:", loaded)
    """
)


def test_without_torch_or_transformers_the_vectors_are_torchs(hf_exported, hf_lm, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    out = tmp_path / "texts.npy"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(hf_exported[0]), str(out)],
        input="\x00".join(TEXTS), capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "torch-like modules: []" in proc.stdout, proc.stdout
    cos = np.sum(np.load(out) * encode_texts(hf_lm, TEXTS), axis=1)
    assert cos.min() >= 0.99999, cos
