"""Exporting the tiny model: the manifest, vectors equal to torch's, int8 agreement, refusals in one line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers.embedhelp import encode_images
from helpers.onnxhelp import probe_pictures

from clipdex.errors import ClipdexError, ModelError
from clipdex.retrieval.embed import encode_texts
from clipdex.retrieval.onnx.encoder import FORMAT, MANIFEST, OnnxEncoder, read_manifest
from clipdex.retrieval.onnx.export import MIN_COSINE, ExportError, export_model

TEXTS = ["a red square", "two dogs on a beach", "", "東京 🐶 &amp; (<end_of_text>)", " ".join(["long"] * 50)]


def test_manifest(exported, tiny_lm) -> None:
    folder, manifest = exported
    assert json.loads((folder / MANIFEST).read_text()) == manifest == read_manifest(folder)
    assert manifest["format"] == FORMAT and manifest["model"] == str(tiny_lm.spec)
    assert manifest["embed_dim"] == 64 and manifest["image_size"] == [64, 64]
    assert manifest["precisions"] == ["fp32", "int8"]
    assert manifest["tokenizer"]["kind"] == "clip-bpe" and manifest["tokenizer"]["context_length"] == 32
    assert [s["op"] for s in manifest["preprocess"]][-1] == "normalize"
    assert all(manifest["fp32_min_cosine"][t] >= MIN_COSINE for t in ("image", "text"))
    for tower in ("image", "text"):
        figures = manifest["int8"][tower]
        print(f"int8 {tower}: mean cosine {figures['mean_cosine']:.6f}, min {figures['min_cosine']:.6f}")
        assert 0.9 < figures["min_cosine"] <= figures["mean_cosine"] <= 1.0 + 1e-6
    names = sorted(p.name for p in folder.iterdir())
    expected = ["image.int8.onnx", "image.onnx", MANIFEST, "text.int8.onnx", "text.onnx", "tokenizer.json"]
    assert names == expected
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left


def _worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.min(np.sum(a * b, axis=1)))


def test_fp32_vectors_match_torch(exported, tiny_lm) -> None:
    enc = OnnxEncoder(exported[0])
    assert enc.runtime == "onnx (CPUExecutionProvider, fp32)"
    texts, images = enc.encode_texts(TEXTS, batch_size=3), enc.encode_images(probe_pictures(), batch_size=4)
    assert texts.dtype == images.dtype == np.float32 and texts.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    text_cos = _worst_cosine(texts, encode_texts(tiny_lm, TEXTS))
    image_cos = _worst_cosine(images, encode_images(tiny_lm, probe_pictures()))
    print(f"fp32 worst cosine vs torch: text {text_cos:.7f}, image {image_cos:.7f}")
    assert text_cos >= 0.9999 and image_cos >= 0.9999
    one = enc.encode_texts(TEXTS[:1])  # a batch size other than the traced one
    assert _worst_cosine(one, texts[:1]) >= 0.99999
    assert enc.encode_texts([]).shape == (0, 64) and enc.encode_images([]).shape == (0, 64)


def test_int8_vectors_agree(exported, tiny_lm) -> None:
    enc = OnnxEncoder(exported[0], precision="int8")
    text_cos = _worst_cosine(enc.encode_texts(TEXTS), encode_texts(tiny_lm, TEXTS))
    image_cos = _worst_cosine(enc.encode_images(probe_pictures()), encode_images(tiny_lm, probe_pictures()))
    print(f"int8 worst cosine vs torch: text {text_cos:.5f}, image {image_cos:.5f}")
    assert text_cos > 0.95 and image_cos > 0.95


def test_encoder_refuses_missing_graphs(exported, tmp_path) -> None:
    with pytest.raises(ModelError, match="no exported ONNX graphs"):
        OnnxEncoder(tmp_path)
    manifest = {**exported[1], "precisions": ["fp32"]}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="no int8 graphs"):
        OnnxEncoder(tmp_path, precision="int8")


def _one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> None:
    assert isinstance(excinfo.value, ClipdexError) and isinstance(excinfo.value, ExportError)
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    for needle in needles:
        assert needle in message, message


def test_unsupported_tokenizer_is_one_line(tiny_lm, tmp_path) -> None:
    class HFTokenizer:
        pass

    with pytest.raises(ExportError) as excinfo:
        export_model(dataclasses.replace(tiny_lm, tokenizer=HFTokenizer()), tmp_path / "out")
    _one_line_error(excinfo, "cannot run on ONNX Runtime", "HFTokenizer")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_unsupported_preprocess_is_one_line(tiny_lm, tmp_path) -> None:
    from torchvision import transforms as T

    odd = T.Compose([T.Grayscale(3), *tiny_lm.preprocess.transforms])
    with pytest.raises(ExportError) as excinfo:
        export_model(dataclasses.replace(tiny_lm, preprocess=odd), tmp_path / "out")
    _one_line_error(excinfo, "Grayscale")
    assert list(tmp_path.iterdir()) == []


def test_export_failure_is_one_line(tiny_lm, tmp_path, monkeypatch) -> None:
    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::odd' to ONNX is not supported\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(ExportError) as excinfo:
        export_model(tiny_lm, tmp_path / "out")
    _one_line_error(excinfo, "image tower cannot be exported", "aten::odd")
    assert list(tmp_path.iterdir()) == []


def test_reexport_replaces_the_folder(tiny_lm, tmp_path) -> None:
    import copy

    folder = tmp_path / "graphs"
    folder.mkdir()
    (folder / "stale.onnx").write_text("old")
    # frozen weights: nn.MultiheadAttention would take its fused fast path, which has no ONNX op
    frozen = dataclasses.replace(tiny_lm, model=copy.deepcopy(tiny_lm.model).requires_grad_(False))
    manifest = export_model(frozen, folder, int8=False)
    assert manifest["precisions"] == ["fp32"] and "int8" not in manifest
    assert sorted(p.name for p in folder.iterdir()) == ["image.onnx", MANIFEST, "text.onnx", "tokenizer.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["graphs"]
