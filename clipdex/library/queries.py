"""Composed queries, planned once for every caller (`Library.search`, the HTTP API).

A `QueryPlan` holds the terms (texts and images, positive and negative) and their checked weights;
its `vector` encodes the terms (texts in one batch, images in one batch, through whatever encoders
the caller gives: the server batches texts across requests) and composes them
(`clipdex.retrieval.query.compose`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clipdex.errors import ClipdexError, DecodeError
from clipdex.retrieval.query import Terms, Weights, compose

if TYPE_CHECKING:
    from clipdex.retrieval.models import LoadedModel

ImageArg = str | os.PathLike | bytes
Encode = Callable[[list], np.ndarray]  # terms -> (N, D) unit vectors


@dataclass(frozen=True)
class QueryPlan:
    """The terms of one composed query and one weight per term (texts, images, not-texts,
    not-images). Made by `of`, which refuses bad terms and weights before anything is encoded."""

    terms: Terms
    weights: np.ndarray

    @classmethod
    def of(cls, text: Any = None, image: Any = None, not_text: Any = None, not_image: Any = None,
           weights: Weights = None) -> QueryPlan:  # fmt: skip
        """ValueError for an empty text term or weights that do not fit the terms."""
        terms = Terms.of(text, image, not_text, not_image)
        return cls(terms, terms.weights(weights))

    def vector(self, encode_texts: Encode, encode_images: Encode) -> np.ndarray:
        """The query's unit vector; QueryError when the terms cancel out."""
        t = self.terms
        texts = encode_texts(t.text + t.not_text) if t.text or t.not_text else None
        images = encode_images(t.image + t.not_image) if t.image or t.not_image else None
        nt, ni = len(t.text), len(t.image)
        parts = [
            texts[:nt] if texts is not None else None,
            images[:ni] if images is not None else None,
            texts[nt:] if texts is not None else None,
            images[ni:] if images is not None else None,
        ]
        vectors = np.concatenate([p for p in parts if p is not None and len(p)])
        return compose(vectors, t.signs(), self.weights)


def encode_texts(lm: LoadedModel, texts: Sequence[str]) -> np.ndarray:
    """Texts -> (N, D) unit vectors with ``lm``."""
    from clipdex.retrieval.embed import encode_texts as encode

    return encode(lm, texts)


def encode_images(images: Sequence[Any], encode_pictures: Encode, draft_to: tuple[int, int]) -> np.ndarray:
    """Image files or decoded PIL images -> (N, D) unit vectors through ``encode_pictures``, in one
    batch. A file is decoded as indexing decodes it (a large JPEG at reduced scale, never below
    ``draft_to``); an unreadable one is a one-line ClipdexError."""
    from clipdex.inputs.paths import display_path
    from clipdex.inputs.tables import require_file
    from clipdex.retrieval.decode import open_image

    pictures = []
    for image in images:
        if hasattr(image, "convert"):  # already decoded (a PIL image)
            pictures.append(image)
            continue
        require_file(image, "query image")  # before opening: a FIFO would block
        try:
            pictures.append(open_image(image, draft_to))
        except DecodeError as e:
            raise ClipdexError(f"cannot read query image {display_path(os.fsencode(image))}: {e}") from e
    return encode_pictures(pictures)


def vector_query(vector: Any, dim: int | None) -> np.ndarray:
    """``vector`` checked against the library's ``dim`` and normalised."""
    q = np.asarray(vector, np.float32).reshape(-1)
    if dim and q.shape[0] != dim:
        raise ClipdexError(f"query vector has dimension {q.shape[0]}, the library's is {dim}")
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm == 0:
        raise ClipdexError("query vector must be finite and non-zero")
    return q / norm
