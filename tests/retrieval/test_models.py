"""clipdex.retrieval.models: `--model ARCH@TAG` parsing, device choice, a timm-tower model's dimension."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.corehelp import ok, run

from clipdex.errors import ModelError
from clipdex.retrieval.model_init import init_model
from clipdex.retrieval.models import ModelSpec, load_model, pick_device, resolve_spec


def test_model_at_tag_is_model_with_pretrained() -> None:
    assert resolve_spec("ViT-B-32@laion2b_s34b_b79k") == ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
    assert resolve_spec("ViT-B-32@openai") == resolve_spec("ViT-B-32", "openai")
    assert resolve_spec("ViT-B-32@openai").to_arg() == "ViT-B-32@openai"
    with pytest.raises(ModelError, match="unknown pretrained tag 'nope'"):
        resolve_spec("ViT-B-32@nope")
    with pytest.raises(ModelError, match="different weights"):
        resolve_spec("ViT-B-32@openai", "laion2b_s34b_b79k")
    with pytest.raises(ModelError, match="empty pretrained tag"):
        resolve_spec("ViT-B-32@")


def test_clipdex_device_env(monkeypatch):
    monkeypatch.setenv("CLIPDEX_DEVICE", "cpu")
    assert pick_device("auto") == "cpu"
    monkeypatch.setenv("CLIPDEX_DEVICE", "tpu")
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        pick_device("auto")
    assert pick_device("cpu") == "cpu"  # an explicit --device wins over the variable


def test_search_device_option_errors_in_one_line(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    from helpers.corehelp import assert_one_error_line

    (tmp_path / "t.txt").write_text("a red square\n")
    ok("--library", tmp_path / "lib", "add-texts", tmp_path / "t.txt", "--model", tiny_model_dir)
    bad = run("--library", tmp_path / "lib", "search", "red", "--target", "texts", "--device", "tpu")
    assert_one_error_line(bad, "tpu")
    monkeypatch.setenv("CLIPDEX_DEVICE", "cpu")
    assert "a red square" in ok("--library", tmp_path / "lib", "search", "red", "--target", "texts").stdout


TIMM_CFG = {
    "embed_dim": 48,
    "custom_text": True,
    "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224",
                   "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "linear"},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                 "no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
}  # fmt: skip


def test_embed_dim_of_a_timm_tower_model(tmp_path: Path):
    """A SigLIP-like CustomTextCLIP (timm image tower, text projection inside model.text)."""
    pytest.importorskip("timm")

    (tmp_path / "cfg.json").write_text(json.dumps(TIMM_CFG))
    model_dir = init_model(str(tmp_path / "cfg.json"), tmp_path / "timm")
    lm = load_model(resolve_spec(str(model_dir)), "cpu")
    assert type(lm.model).__name__ == "CustomTextCLIP"
    assert lm.embed_dim == 48
    with torch.inference_mode():
        img = lm.model.encode_image(torch.zeros(1, 3, *lm.image_size))
        txt = lm.model.encode_text(lm.tokenizer(["a photo"]))
    assert img.shape[-1] == txt.shape[-1] == lm.embed_dim
