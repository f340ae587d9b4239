"""Re-embed every stored item with a new model, resumably, without interrupting searches."""

from __future__ import annotations

from collections.abc import Callable

from clipdex.index.scan import display_path
from clipdex.index.store import IMAGE, TEXT, Store
from clipdex.retrieval.decode import default_workers, load_and_preprocess, ordered_prefetch
from clipdex.retrieval.embed import encode_image_batch, encode_texts
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
    import torch

    target = lm.spec.to_json()
    if store.get_meta("pending_model") != target:
        with store.transaction():
            store.clear_pending()
            store.set_meta("pending_model", target)
    done = store.pending_ids()
    images = [(i, p) for i, p, _ in store.iter_items(IMAGE) if i not in done]
    texts = [(i, t) for i, _, t in store.iter_items(TEXT) if i not in done]
    total, count = len(images) + len(texts), 0

    def decode(item: tuple[int, bytes | None]) -> torch.Tensor:
        if item[1] is None:
            raise FileNotFoundError("no file path (imported vector)")
        return load_and_preprocess(item[1], lm.preprocess, lm.image_size)

    ids: list[int] = []
    pixels: list[torch.Tensor] = []
    for (item_id, path), result in ordered_prefetch(decode, images, workers or default_workers(), BATCH * 2):
        count += 1
        if isinstance(result, BaseException):
            if problem:
                problem(display_path(path) if path else f"item {item_id}", f"{result}; dropped")
            continue
        ids.append(item_id)
        pixels.append(result)
        if len(ids) == BATCH:
            store.put_pending(ids, encode_image_batch(lm, torch.stack(pixels)))
            ids, pixels = [], []
            if progress:
                progress(count, total)
    if ids:
        store.put_pending(ids, encode_image_batch(lm, torch.stack(pixels)))
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
