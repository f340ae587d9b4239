"""What the CLI needs besides a `Library`: model files, text files, embedding jobs. Each import is
lazy (torch only when a model is made), so importing this module costs nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def init_model(arch_or_json: str, out: str | os.PathLike, seed: int = 0, **text_tower: Any) -> Path:
    """A randomly initialised model (fixed ``seed``) in local-dir format at ``out``; ``text_tower``
    (``text_tower="hf"``, ``corpus``, ``tokenizer``, ``vocab_size``): see
    `clipdex.retrieval.model_init.init_model`."""
    from clipdex.retrieval.model_init import init_model as make

    return make(arch_or_json, out, seed=seed, **text_tower)


def read_texts(path: str | os.PathLike, column: str | None = None) -> list[str]:
    """Non-empty, stripped texts of a text, .csv/.tsv or .jsonl file (``column``, default ``text``)."""
    from clipdex.inputs.tables import read_texts as read

    return read(path, column)


def shard_model(folder: str | os.PathLike) -> tuple[str, str | None] | None:
    """(model, pretrained) that `clipdex embed` recorded in a SHARD_DIR, or None."""
    from clipdex.scale.shards import manifest_model

    return manifest_model(folder)


def embed_sources(sources: list[str | bytes], out: str | os.PathLike, **options: Any) -> Any:
    """`clipdex embed`: embed images into a SHARD_DIR, in-process or on Ray; ``options`` and the
    returned stats as `clipdex.scale.run.run_embed`'s."""
    from clipdex.scale.run import run_embed

    return run_embed(sources, out, **options)


def explain_picture(image: Any, text: str | None, vector: Any, lm: Any, dim: int | None = None) -> Any:
    """`Library.explain` with the loaded model ``lm``: ``image`` a file or a decoded picture."""
    from clipdex.library.queries import QueryPlan, encode_texts, vector_query
    from clipdex.retrieval.explain import explain, open_for_explain

    if (text is None) == (vector is None):
        raise ValueError("give exactly one of text=, vector=")
    picture = image if hasattr(image, "convert") else open_for_explain(image)
    if vector is not None:
        query = vector_query(vector, dim)
    else:
        QueryPlan.of(text)  # an empty text is refused as a search refuses it
        query = encode_texts(lm, [text])[0]  # one term of weight 1: its own unit vector
    return explain(lm, picture, query)


def explain_file(
    image: str | os.PathLike | bytes, text: str, model: str | None = None, device: str = "auto"
) -> tuple[Any, Any]:
    """(Explanation, picture) for `clipdex explain`: ``model`` any ``--model`` value (default: the
    default model), loaded on ``device``; no library needed."""
    from clipdex.retrieval.explain import open_for_explain
    from clipdex.retrieval.models import load_model, resolve_spec

    spec = resolve_spec(model)
    picture = open_for_explain(image)
    return explain_picture(picture, text, None, load_model(spec, device)), picture
