"""The torch-free twin of a model's open_clip tokenizer, whichever kind it is, and reading one back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipdex.retrieval.onnx import hf_tokenizer, tokenizer


def twin_of(tok: Any) -> Any:
    """open_clip's SimpleTokenizer -> ClipTokenizer, its HFTokenizer -> HfTokenizer; else
    UnsupportedTokenizer saying why not."""
    if type(tok).__name__ == "HFTokenizer":
        return hf_tokenizer.twin_of_hf(tok)
    return tokenizer.twin_of(tok)


def load_tokenizer(folder: Path, desc: dict) -> Any:
    """The torch-free tokenizer a graph folder's manifest describes."""
    if desc.get("kind") == hf_tokenizer.KIND:
        return hf_tokenizer.HfTokenizer.load(folder, desc)
    return tokenizer.ClipTokenizer.load(folder, desc)
