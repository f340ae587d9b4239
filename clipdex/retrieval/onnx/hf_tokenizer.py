"""open_clip's ``HFTokenizer`` without torch or transformers: the same ``tokenizer.json``, run by the
``tokenizers`` library.

open_clip cleans each text (``whitespace`` by default: ftfy, HTML unescape, whitespace collapsed),
then calls the transformers tokenizer with ``max_length=context_length, padding="max_length",
truncation=True``; with ``strip_sep_token`` the separator ids become 0. A fast transformers
tokenizer *is* a ``tokenizers.Tokenizer`` plus those call options, so the twin is its backend with
truncation and padding set the same way. ``export`` checks the ids on probe texts before it keeps a
graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipdex.retrieval.onnx.tokenizer import CLEANINGS, UnsupportedTokenizer, clean

KIND = "hf-tokenizers"
FILE = "hf_tokenizer.json"


@dataclass
class HfTokenizer:
    """Texts -> (N, context_length) int64 ids, as open_clip's HFTokenizer gives them."""

    backend: Any
    context_length: int
    clean_mode: str = "whitespace"
    pad_id: int = 0
    pad_token: str = "<pad>"
    sep_id: int | None = None  # set: open_clip's strip_sep_token (separator ids -> 0)
    truncation_side: str = "right"
    padding_side: str = "right"

    def __post_init__(self) -> None:
        self.backend.enable_truncation(self.context_length, direction=self.truncation_side)
        self.backend.enable_padding(
            length=self.context_length,
            pad_id=self.pad_id,
            pad_token=self.pad_token,
            direction=self.padding_side,
        )

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        encoded = self.backend.encode_batch([clean(t, self.clean_mode) for t in texts])
        out = np.array([e.ids for e in encoded], np.int64).reshape(len(texts), self.context_length)
        if self.sep_id is not None:
            out[out == self.sep_id] = 0
        return out

    def save(self, folder: Path) -> dict:
        self.backend.save(str(folder / FILE))
        return {"kind": KIND, "file": FILE, "context_length": self.context_length, "clean": self.clean_mode,
                "pad_id": self.pad_id, "pad_token": self.pad_token, "sep_id": self.sep_id,
                "truncation_side": self.truncation_side, "padding_side": self.padding_side}  # fmt: skip

    @classmethod
    def load(cls, folder: Path, desc: dict) -> HfTokenizer:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(folder / desc["file"]))
        return cls(
            backend, int(desc["context_length"]), desc.get("clean", "whitespace"), int(desc["pad_id"]),
            desc.get("pad_token", "<pad>"), desc.get("sep_id"), desc.get("truncation_side", "right"),
            desc.get("padding_side", "right"),
        )  # fmt: skip


def twin_of_hf(tokenizer: Any) -> HfTokenizer:
    """The twin of a loaded open_clip ``HFTokenizer``, or UnsupportedTokenizer saying why not."""
    from tokenizers import Tokenizer

    if getattr(tokenizer, "tokenizer_mode", "") == "clips":
        raise UnsupportedTokenizer("the 'clips' tokenizer mode has no torch-free twin yet")
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is None:
        raise UnsupportedTokenizer(f"{type(tokenizer).__name__} holds no transformers tokenizer: no twin")
    backend = getattr(inner, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedTokenizer(f"{type(inner).__name__} is not a fast (tokenizers) tokenizer")
    mode = _clean_mode(tokenizer)
    if inner.pad_token_id is None:
        raise UnsupportedTokenizer("the tokenizer has no padding token")
    sep = inner.sep_token_id if getattr(tokenizer, "strip_sep_token", False) else None
    return HfTokenizer(
        Tokenizer.from_str(backend.to_str()), int(tokenizer.context_length), mode, int(inner.pad_token_id),
        str(inner.pad_token), sep, getattr(inner, "truncation_side", "right"),
        getattr(inner, "padding_side", "right"),
    )  # fmt: skip


def _clean_mode(tokenizer: Any) -> str:
    name = getattr(getattr(tokenizer, "clean_fn", None), "__name__", "")
    mode = name.removeprefix("_clean_")
    if mode not in CLEANINGS:
        raise UnsupportedTokenizer(f"text cleaning {name!r} has no torch-free twin yet")
    return mode
