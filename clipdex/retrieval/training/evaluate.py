"""Compare models on your own image–caption pairs (`clipdex eval`, `clipdex.evaluate`).

Every image is decoded once and the same decoded pixels go to every model (each applies its own
preprocess), so the models are compared on identical input. Images stream through in batches,
so memory holds the models and one batch, not the whole set. Metrics: `clipdex.retrieval.training.metrics`
(the same code fine-tuning reports with).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.retrieval.decode import open_image
from clipdex.retrieval.encoders import Encoder
from clipdex.retrieval.models import ModelSpec, load_model, resolve_spec
from clipdex.retrieval.prefetch import default_workers, ordered_prefetch
from clipdex.retrieval.training.metrics import group_pairs, retrieval_metrics
from clipdex.retrieval.training.pairs import MAX_BAD_FRACTION, PairsArg, coerce_pairs


def evaluate(
    pairs: PairsArg,
    models: str | ModelSpec | Sequence[str | ModelSpec] | None = None,
    *,
    device: str = "auto",
    batch_size: int = 32,
    workers: int | None = None,
    problem: Callable[[str, str], None] | None = None,
    runtime: str | None = None,
    notice: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Text->image and image->text Recall@1/5/10, median rank and mAP of each model on ``pairs``.

    ``pairs``: a PAIRS file/folder (as `clipdex finetune` reads) or a list of ``(image, caption)``.
    ``models``: model specs (``ARCH@TAG``, ``local-dir:PATH``, ``hf-hub:…``); None = the default
    model. Returns one dict per model, in order: ``{"model", "pairs", "t2i_r1", …, "i2t_map"}``.
    Pairs whose image cannot be read are skipped (reported via ``problem``) and not counted.
    ``runtime`` (auto, onnx, torch; default ``$CLIPDEX_RUNTIME`` or auto) encodes as the library
    does: with ONNX Runtime on the CPU, each model's graphs exported once into the user's cache
    (`clipdex.retrieval.onnx.cache`; ``notice`` hears of it), else with torch.
    """
    from clipdex.retrieval.onnx.cache import eval_encoder

    pair_list, _ = coerce_pairs(pairs)
    if not pair_list:
        raise ClipdexError("no image–caption pairs to evaluate")
    if models is None or isinstance(models, (str, ModelSpec)):
        models = [models]  # type: ignore[list-item]
    specs = [m if isinstance(m, ModelSpec) else resolve_spec(m) for m in models]
    lms = [load_model(spec, device) for spec in dict.fromkeys(specs)]
    encoders = {lm.spec: eval_encoder(lm, runtime, notice) for lm in lms}

    paths = list(dict.fromkeys(p.image for p in pair_list))
    vectors, bad = _embed_images(encoders, paths, batch_size, workers or default_workers())
    for path, reason in bad:
        if problem is not None:
            problem(path, reason)
    kept = [p for p in pair_list if p.image in vectors[lms[0].spec]]
    if len(pair_list) - len(kept) > MAX_BAD_FRACTION * len(pair_list):
        raise ClipdexError(
            f"{len(pair_list) - len(kept)} of {len(pair_list)} pairs have a missing or unreadable image "
            f"(more than {MAX_BAD_FRACTION:.0%}; are relative paths right?)"
        )
    images, texts, relevant = group_pairs(kept)
    results = []
    for spec in specs:
        img = np.stack([vectors[spec][p] for p in images])
        metrics = retrieval_metrics(img, encoders[spec].encode_texts(texts), relevant)
        results.append({"model": spec.to_arg(), "pairs": len(kept), **metrics})
    return results


def _embed_images(
    encoders: dict[ModelSpec, Encoder], paths: Sequence[str], batch_size: int, workers: int
) -> tuple[dict[ModelSpec, dict[str, np.ndarray]], list[tuple[str, str]]]:
    """Decode each image once (threads, in order) and encode that batch with every model."""
    vectors: dict[ModelSpec, dict[str, np.ndarray]] = {spec: {} for spec in encoders}
    bad: list[tuple[str, str]] = []
    batch: list[tuple[str, Any]] = []

    def flush() -> None:
        for spec, enc in encoders.items():
            vecs = enc.encode_pictures([im for _, im in batch])
            vectors[spec].update(zip([p for p, _ in batch], vecs, strict=True))
        batch.clear()

    for path, result in ordered_prefetch(open_image, paths, workers, ahead=batch_size * 2):
        if isinstance(result, BaseException):
            bad.append((path, str(result).splitlines()[0] if str(result) else type(result).__name__))
            continue
        batch.append((path, result))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return vectors, bad
