"""Every command with a model whose text tower is a Hugging Face transformer, Chinese end to end:
`model init --text-tower hf`, index with Chinese sidecar captions, Chinese and mixed queries through
`search` (torch and ONNX Runtime: same top 10), `add-texts`, `info`, `eval`, `use-model`, the HTTP
API, and one clear line when the tokenizer is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.corehelp import assert_one_error_line, json_lines, ok, run
from helpers.hfhelp import TINY_HF_CFG, open_clip_text_vectors

from clipdex.demo import make_scenes, write_pairs

QUERIES = ["红色圆形在白色背景的左边", "🐶🏖️", "a blue square 在中间 🌸", "海边奔跑的狗"]


@pytest.fixture(scope="module")
def zh(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model made by the CLI, and a library of 24 scenes with Chinese sidecar captions."""
    root = tmp_path_factory.mktemp("zh")
    (root / "tiny-hf.json").write_text(json.dumps(TINY_HF_CFG))
    made = ok("model", "init", root / "tiny-hf.json", "--text-tower", "hf", "--out", root / "model")
    assert made.stdout.strip() == f"local-dir:{root / 'model'}"
    scenes = make_scenes(root / "scenes", 24, seed=5, size=64, lang="zh")
    ok("--library", root / "lib", "index", root / "scenes", "--model", root / "model", "--quiet")
    return {"root": root, "model": root / "model", "lib": root / "lib", "scenes": scenes}


def _search(lib: Path, *args: object) -> list[dict]:
    return json_lines(ok("--library", lib, "search", *args, "--json").stdout)


def _open_clip_image_vectors(model_dir: Path, paths: list[str]) -> np.ndarray:
    import os

    import open_clip
    from PIL import Image

    old = os.getcwd()
    os.chdir(model_dir)  # plain open_clip resolves the tower's "." from the working directory
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    finally:
        os.chdir(old)
    model.eval()
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        return torch.nn.functional.normalize(model.encode_image(pixels), dim=-1).numpy()


def test_chinese_query_scores_are_open_clips(zh) -> None:
    for query in QUERIES:
        hits = _search(zh["lib"], query, "-k", 5)
        assert len(hits) == 5
        text, _ = open_clip_text_vectors(zh["model"], [query])
        images = _open_clip_image_vectors(zh["model"], [h["path"] for h in hits])
        assert np.abs(images @ text[0] - np.array([h["score"] for h in hits])).max() <= 1e-5


def test_a_chinese_caption_finds_itself_among_texts(zh) -> None:
    caption = zh["scenes"][3][1]
    top = _search(zh["lib"], caption, "--target", "texts", "-k", 1)[0]
    assert top["text"] == caption and top["score"] == pytest.approx(1.0, abs=1e-5)


def test_add_texts_in_chinese_and_mixed(zh, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    shutil.copytree(zh["lib"], lib)
    texts = ["一只狗在海边奔跑 🐶", "东京的夜景", "a cat 在沙发上 sleeping"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    ok("--library", lib, "add-texts", tmp_path / "texts.txt", "--quiet")
    for text in texts:
        assert _search(lib, text, "--target", "texts", "-k", 1)[0]["text"] == text
    info = json_lines(ok("--library", lib, "info", "--json").stdout)[0]
    assert info["tokenizer"]["kind"] == "hf" and info["tokenizer"]["context_length"] == 32


def test_onnx_runtime_gives_torchs_top_10(zh, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    shutil.copytree(zh["lib"], lib)
    ok("--library", lib, "model", "export-onnx", "--json")
    for query in QUERIES:
        torch_hits = _search(lib, query, "--runtime", "torch")
        onnx_hits = _search(lib, query, "--runtime", "onnx")
        assert [h["id"] for h in onnx_hits] == [h["id"] for h in torch_hits] and len(onnx_hits) == 10
        assert np.allclose([h["score"] for h in onnx_hits], [h["score"] for h in torch_hits], atol=1e-5)


def test_eval_and_use_model_with_hf_models(zh, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", zh["scenes"][:12])
    result = json_lines(ok("eval", pairs, "--model", zh["model"], "--json").stdout)
    assert result[0]["pairs"] == 12 and 0 <= result[0]["t2i_r5"] <= 1 and 0 <= result[0]["i2t_r5"] <= 1
    other = tmp_path / "other"
    ok("model", "init", zh["root"] / "tiny-hf.json", "--text-tower", "hf", "--out", other, "--seed", "1")
    lib = tmp_path / "lib"
    shutil.copytree(zh["lib"], lib)
    ok("--library", lib, "use-model", other, "--quiet")
    info = json_lines(ok("--library", lib, "info", "--json").stdout)[0]
    assert info["model"] == f"local-dir:{other}" and info["tokenizer"]["kind"] == "hf"
    text, _ = open_clip_text_vectors(other, [QUERIES[0]])
    hits = _search(lib, QUERIES[0], "-k", 3)
    images = _open_clip_image_vectors(other, [h["path"] for h in hits])
    assert np.abs(images @ text[0] - np.array([h["score"] for h in hits])).max() <= 1e-5


def test_http_api_takes_chinese_queries(zh, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from clipdex.library import Library
    from clipdex.serve.app import create_app

    with Library.open(zh["lib"]) as lib:
        want = [h.id for h in lib.search(text=QUERIES[2], k=5)]
        app = create_app(lib, thumbnails=tmp_path / "thumbs")
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            got = client.get("/api/search", params={"q": QUERIES[2], "k": 5}).json()["results"]
    assert [r["id"] for r in got] == want and len(want) == 5


def test_missing_tokenizer_is_one_clear_line(zh, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(zh["model"], broken)
    (broken / "tokenizer.json").unlink()
    result = run("--library", tmp_path / "lib", "index", zh["root"] / "scenes", "--model", broken, "--quiet")
    assert_one_error_line(result, "no tokenizer", "tokenizer.json", str(broken))
    result = run(
        "model", "init", "ViT-B-32", "--out", tmp_path / "x", "--corpus", zh["root"] / "tiny-hf.json"
    )
    assert_one_error_line(result, "--text-tower hf")
