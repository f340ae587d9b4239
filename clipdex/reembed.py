"""Re-embed every stored item with a new model, resumably, without interrupting searches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from clipdex.index.scan import display_path
from clipdex.index.store import IMAGE, TEXT, Store
from clipdex.retrieval.decode import default_workers
from clipdex.retrieval.embed import embed_image_files, encode_texts
from clipdex.retrieval.models import LoadedModel

BATCH = 32


def reembed_all(
    store: Store,
    lm: LoadedModel,
    *,
    problem: Callable[[str, str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> int:
    """Write new vectors to the pending table, then swap them in (and record the model) at once.

    Pending vectors of the same target model survive an interruption and are not recomputed.
    Items whose image can no longer be read are dropped at the swap (reported via ``problem``).
    """
    target = lm.spec.to_json()
    if store.get_meta("pending_model") != target:
        with store.transaction():
            store.clear_pending()
            store.set_meta("pending_model", target)
    done = store.pending_ids()
    images = [(i, p) for i, p, _ in store.iter_items(IMAGE) if i not in done]
    texts = [(i, t) for i, _, t in store.iter_items(TEXT) if i not in done]
    total, count = len(images) + len(texts), 0

    batches = embed_image_files(
        lm, images, lambda item: item[1], batch_size=BATCH, workers=workers or default_workers(),
        draft_to=lm.image_size,
    )  # fmt: skip
    for encoded, failed, consumed in batches:
        for (item_id, path), error in failed:
            if problem:
                problem(display_path(path) if path else f"item {item_id}", f"{error}; dropped")
        if encoded:
            store.put_pending([item_id for (item_id, _), _ in encoded], np.stack([v for _, v in encoded]))
        count = consumed
        if progress:
            progress(count, total)
    for start in range(0, len(texts), 256):
        chunk = texts[start : start + 256]
        store.put_pending([i for i, _ in chunk], encode_texts(lm, [t or "" for _, t in chunk]))
        count += len(chunk)
        if progress:
            progress(count, total)
    with store.transaction():
        store.swap_in_pending()
        store.set_meta("model", target)
        store.set_meta("dim", str(lm.embed_dim))
        store.set_meta("pending_model", None)
        store.bump_generation()
    return total
