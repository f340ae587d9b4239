"""Helpers for the tests of models with a Hugging Face text tower (a helper module, not a test)."""

from __future__ import annotations

import json
from pathlib import Path

TINY_VISION = {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32}
# The same tiny CLIP with a Hugging Face (XLM-R style) text tower, built offline by `model init
# --text-tower hf` with a tokenizer trained on clipdex's built-in multilingual corpus.
TINY_HF_CFG = {
    "embed_dim": 64,
    "vision_cfg": TINY_VISION,
    "text_cfg": {"context_length": 32},
    "hf_text_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "intermediate_size": 128},
}  # fmt: skip


def tiny_hf_model(root: Path, name: str = "tiny-hf", seed: int = 0, **kw) -> Path:
    """A random-init tiny HF-text-tower model written by clipdex's own `model init` code."""
    from clipdex.retrieval.model_init import init_model

    cfg = root / f"{name}.json"
    cfg.write_text(json.dumps(TINY_HF_CFG))
    return init_model(str(cfg), root / name, seed=seed, text_tower="hf", **kw)


# Chinese, emoji and mixed texts: what the multilingual path must encode exactly as open_clip does
TEXTS = ["海边奔跑的狗", "🐶🏖️🌸", "a dog 在海边 running 🐶", "东京の夜景 & 한국어", "", "狗 " * 40,
         "Naïve CAFÉ — déjà vu", "<s></s><pad> [SEP]", "  tabs\tand\nnew   lines  "]  # fmt: skip


def open_clip_text_vectors(model_dir: Path, texts: list[str]):
    """Unit text vectors and token ids computed by plain open_clip (from inside the folder, where
    transformers resolves its ``hf_model_name`` ".")."""
    import os

    import open_clip
    import torch

    old = os.getcwd()
    os.chdir(model_dir)
    try:
        model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    finally:
        os.chdir(old)
    model.eval()
    with torch.no_grad():
        ids = tokenizer(texts)
        vectors = torch.nn.functional.normalize(model.encode_text(ids), dim=-1)
    return vectors.numpy(), ids.numpy()
