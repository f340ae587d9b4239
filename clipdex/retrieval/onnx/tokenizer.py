"""open_clip's CLIP tokenizer without torch: the same BPE vocabulary, run by Hugging Face ``tokenizers``.

open_clip's ``SimpleTokenizer`` cleans the text (ftfy, HTML unescape, whitespace, lower case), splits it
with one regex, maps bytes to unicode as GPT-2 does and applies BPE with an end-of-word ``</w>``
suffix. The cleaning and the split run here in Python with the same ``regex`` pattern (so a special
token glued to punctuation, as in ``(<end_of_text>``, splits as open_clip splits it); ``tokenizers``
does the byte mapping and the BPE on the pieces. The result is exactly open_clip's ids, which
``export`` checks on probe texts before it writes a graph.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SOT, EOT = "<start_of_text>", "<end_of_text>"
# open_clip's split pattern after its special tokens, compiled with regex.IGNORECASE as open_clip does.
SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLEANINGS = ("lower", "whitespace")  # open_clip's clean modes reproduced here ("canonicalize" is not)
TOKENIZER_FILE = "tokenizer.json"


class UnsupportedTokenizer(Exception):
    """The model's tokenizer has no torch-free twin here (the caller keeps using torch)."""


def _whitespace(text: str) -> str:
    return " ".join(text.split())  # str.split's notion of whitespace, as open_clip's


def _basic(text: str) -> str:
    import ftfy

    text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def clean(text: str, mode: str) -> str:
    """open_clip's ``get_clean_fn(mode)`` for the modes in CLEANINGS."""
    text = _whitespace(_basic(text))
    return text.lower() if mode == "lower" else text


def build_bpe(vocab: dict[str, int], merges: list[tuple[str, str]], specials: list[str]) -> Any:
    """A ``tokenizers.Tokenizer`` doing open_clip's byte mapping and BPE on already split pieces.

    ``vocab`` and ``merges`` (in rank order) are the loaded tokenizer's own tables, so a model with
    its own vocabulary file gets its own ids. The specials are added tokens: a piece that *is* one
    (open_clip's BPE cache) maps to its id; any other piece goes through BPE.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in specials])
    return tok


def split_pattern(specials: list[str]) -> Any:
    """open_clip's ``SimpleTokenizer.pat`` for these special tokens."""
    import regex

    return regex.compile("|".join(specials) + "|" + SPLIT, regex.IGNORECASE)


@dataclass
class ClipTokenizer:
    """Texts -> (N, context_length) int64 token ids, as open_clip's SimpleTokenizer gives them."""

    backend: Any
    context_length: int
    clean_mode: str = "lower"
    specials: tuple[str, ...] = (SOT, EOT)

    def __post_init__(self) -> None:
        self.sot = self.backend.token_to_id(SOT)
        self.eot = self.backend.token_to_id(EOT)
        self.pattern = split_pattern(list(self.specials))

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        if isinstance(texts, str):  # as open_clip's: one text is a batch of one
            texts = [texts]
        pieces = [self.pattern.findall(clean(t, self.clean_mode)) for t in texts]
        encoded = self.backend.encode_batch(pieces, is_pretokenized=True, add_special_tokens=False)
        out = np.zeros((len(texts), self.context_length), np.int64)
        for row, enc in zip(out, encoded):
            ids = [self.sot, *enc.ids, self.eot]
            if len(ids) > self.context_length:  # truncate, keeping the end-of-text token last
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            row[: len(ids)] = ids
        return out

    def save(self, folder: Path) -> dict:
        """Write the backend next to the graphs; returns the description kept in the manifest."""
        self.backend.save(str(folder / TOKENIZER_FILE))
        return {"kind": "clip-bpe", "file": TOKENIZER_FILE, "context_length": self.context_length,
                "clean": self.clean_mode, "specials": list(self.specials)}  # fmt: skip

    @classmethod
    def load(cls, folder: Path, desc: dict) -> ClipTokenizer:
        from tokenizers import Tokenizer

        if desc.get("kind") != "clip-bpe":
            raise UnsupportedTokenizer(f"unknown tokenizer kind {desc.get('kind')!r}")
        backend = Tokenizer.from_file(str(folder / desc["file"]))
        specials = tuple(desc.get("specials", (SOT, EOT)))
        return cls(backend, int(desc["context_length"]), desc.get("clean", "lower"), specials)


def twin_of(tokenizer: Any) -> ClipTokenizer:
    """The torch-free twin of a loaded open_clip SimpleTokenizer, or UnsupportedTokenizer saying why
    not (`clipdex.retrieval.onnx.twins` picks the twin of any tokenizer)."""
    name = type(tokenizer).__name__
    if name != "SimpleTokenizer":
        raise UnsupportedTokenizer(f"{name} has no torch-free twin yet")
    if getattr(tokenizer, "reduction_fn", None) is not None:
        raise UnsupportedTokenizer("a tokenizer with a reduction mask has no torch-free twin yet")
    mode = _clean_mode(tokenizer)
    specials = [tokenizer.decoder[i] for i in tokenizer.all_special_ids]
    if specials[:2] != [SOT, EOT]:
        raise UnsupportedTokenizer(f"unexpected special tokens {specials[:2]}")
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    backend = build_bpe(dict(tokenizer.encoder), merges, specials)
    return ClipTokenizer(backend, int(tokenizer.context_length), mode, tuple(specials))


def _clean_mode(tokenizer: Any) -> str:
    fn = getattr(tokenizer, "clean_fn", None)
    name = getattr(getattr(fn, "func", fn), "__name__", "")
    if name == "_clean_lower":
        return "lower"
    if name == "_clean_whitespace":
        return "whitespace"
    raise UnsupportedTokenizer(f"text cleaning {name or fn!r} has no torch-free twin yet")
