"""Retrieval recall on a held-out set: text->image and image->text Recall@K."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clipdex.retrieval.pairs import Pair

KEYS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")


def recall_at_k(
    image_vecs: np.ndarray,
    text_vecs: np.ndarray,
    text_to_image: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K both ways for unique images with one or more captions each.

    Text->image: a hit when the caption's own image is in the top k. Image->text: a hit when ANY of
    the image's captions is in the top k. Vectors are unit-length, so the dot product is the cosine.
    A rank counts the candidates scoring strictly higher, so exact ties (two images with the same
    caption text, say) count in the query's favour instead of depending on file order.
    """
    image_vecs = np.asarray(image_vecs, np.float32)
    text_vecs = np.asarray(text_vecs, np.float32)
    owner = np.asarray(text_to_image, np.int64)
    sims = text_vecs @ image_vecs.T  # (T, I)
    own = sims[np.arange(len(owner)), owner]
    t_rank = (sims > own[:, None]).sum(axis=1)
    best_own = np.full(len(image_vecs), -np.inf, np.float32)
    np.maximum.at(best_own, owner, own)  # each image's best-scoring own caption
    i_rank = (sims > best_own[None, :]).sum(axis=0)
    out = {}
    for k in ks:
        out[f"t2i_r{k}"] = float(np.mean(t_rank < k))
    for k in ks:
        out[f"i2t_r{k}"] = float(np.mean(i_rank < k))
    return out


def mean_recall(metrics: Mapping[str, float]) -> float:
    """The model-selection score: the mean of the six Recall@1/5/10 values (both directions)."""
    return float(np.mean([metrics[k] for k in KEYS]))


def group_by_image(pairs: Sequence[Pair]) -> tuple[list[str], list[str], list[int]]:
    """(unique image paths in first-seen order, captions, caption -> image index)."""
    index: dict[str, int] = {}
    texts, owner = [], []
    for p in pairs:
        owner.append(index.setdefault(p.image, len(index)))
        texts.append(p.caption)
    return list(index), texts, owner


def evaluate(lm: Any, pairs: Sequence[Pair], images: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Recall of ``lm`` on ``pairs``, embedding exactly as the library does (eval preprocess).

    ``images`` may hold already decoded PIL images by path; otherwise they are decoded here.
    """
    from clipdex.retrieval.decode import open_image
    from clipdex.retrieval.embed import encode_images, encode_texts

    paths, texts, owner = group_by_image(pairs)
    pil = (images[p] if images is not None else open_image(p) for p in paths)
    return recall_at_k(encode_images(lm, pil), encode_texts(lm, texts), owner)
