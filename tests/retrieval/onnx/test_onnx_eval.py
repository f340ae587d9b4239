"""`clipdex eval` through ONNX Runtime: graphs exported once into the cache, figures as torch's."""

from __future__ import annotations

import json

import pytest
from helpers.corehelp import json_lines, make_images, ok


def test_eval_on_onnx_runtime_equals_torch_and_caches_the_graphs(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPDEX_ONNX_CACHE", str(tmp_path / "cache"))
    make_images(tmp_path / "pics", [f"p{i}.png" for i in range(8)])
    rows = [{"image": f"pics/p{i}.png", "caption": f"picture number {i}"} for i in range(8)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", pairs, "--model", tiny_model_dir, "--json"]
    (torch_row,) = json_lines(ok(*args, "--runtime", "torch").stdout)
    first = ok(*args, "--runtime", "onnx")
    assert "exporting model" in first.stderr
    (onnx_row,) = json_lines(first.stdout)
    assert onnx_row.keys() == torch_row.keys()
    for key, value in torch_row.items():
        if key not in ("model", "pairs"):
            assert onnx_row[key] == pytest.approx(value, abs=1e-6), key
    assert len(list((tmp_path / "cache").glob("onnx-*/image.onnx"))) == 1
    again = ok(*args, "--runtime", "auto")  # the cached graphs, no second export
    assert "exporting" not in again.stderr and json_lines(again.stdout) == [onnx_row]
