"""Re-embed every stored item with a new model, resumably, without interrupting searches."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from clipdex.errors import ClipdexError, DecodeError
from clipdex.index.store.database import Store
from clipdex.inputs.paths import display_path
from clipdex.kinds import IMAGE, TEXT
from clipdex.results import Reembedded
from clipdex.retrieval.encoders import Encoder
from clipdex.retrieval.hf_text import encoder_tokenizer_record
from clipdex.retrieval.models import ModelSpec
from clipdex.retrieval.prefetch import default_workers

SHOWN = 3  # paths named in a refusal


def unembeddable(store: Store, skip: set[int] = frozenset()) -> list[tuple[int, bytes | None]]:
    """Images whose file is not on this machine (missing, or imported without a local file)."""
    return [
        (i, p)
        for i, p, _ in store.items.iter(IMAGE)
        if i not in skip and (p is None or not os.path.isfile(p))
    ]


def _refuse(what: str, items: list[tuple[int, bytes | None]]) -> ClipdexError:
    shown = ", ".join(display_path(p) if p else f"item {i}" for i, p in items[:SHOWN])
    more = ", …" if len(items) > SHOWN else ""
    return ClipdexError(
        f"{len(items)} images {what} ({shown}{more}); the library is unchanged "
        "(pass --drop-unembeddable to re-embed the rest and drop them)"
    )


def reembed_all(
    store: Store,
    enc: Encoder,
    spec: ModelSpec,
    *,
    precision: str = "fp32",
    drop_unembeddable: bool = False,
    problem: Callable[[str, str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
) -> Reembedded:
    """Write new vectors (``enc``'s, of model ``spec`` at ``precision``) to the pending table, then
    swap them in (and record the model and precision) at once.

    Pending vectors of the same target model survive an interruption and are not recomputed.
    Images that cannot be re-embedded (file missing, or unreadable) make it refuse before the swap
    unless ``drop_unembeddable``; then they are deleted at the swap and counted in ``dropped``.
    """
    target = spec.to_json()
    pending_key = target if precision == "fp32" else f"{target} {precision}"
    resuming = store.meta.get("pending_model") == pending_key
    done = store.pending.ids() if resuming else set()
    missing = unembeddable(store, done)
    if missing and not drop_unembeddable:  # checked before anything is written
        raise _refuse("have no file on this machine to re-embed from", missing)
    if not resuming:
        with store.transaction():
            store.pending.clear()
            store.meta.set("pending_model", pending_key)
    skip = done | {i for i, _ in missing}
    images = [(i, p) for i, p, _ in store.items.iter(IMAGE) if i not in skip]
    times = store.frames.frame_times([i for i, _ in images])  # moments of videos: decoded from the video
    moments = [(i, p, times[i]) for i, p in images if i in times]
    images = [(i, p) for i, p in images if i not in times]
    texts = [(i, t) for i, _, t in store.items.iter(TEXT) if i not in done]
    total, count = len(images) + len(moments) + len(texts), 0

    unreadable: list[tuple[int, bytes | None]] = []
    for path, group in _by_video(moments).items():
        try:
            store.pending.put([i for i, _ in group], _encode_moments(enc, path, group))
        except DecodeError as error:
            unreadable += [(i, path) for i, _ in group]
            if problem:
                verdict = "dropped" if drop_unembeddable else "not re-embedded"
                problem(display_path(path), f"{error}; {verdict}")
        count += len(group)
        if progress:
            progress(count, total)
    batches = enc.embed_files(
        images, lambda item: item[1], batch_size=batch_size or enc.default_batch_size(),
        workers=workers or default_workers(), draft_to=enc.image_size,
    )  # fmt: skip
    for encoded, failed, consumed in batches:
        for (item_id, path), error in failed:
            unreadable.append((item_id, path))
            if problem:
                verdict = "dropped" if drop_unembeddable else "not re-embedded"
                problem(display_path(path) if path else f"item {item_id}", f"{error}; {verdict}")
        if encoded:
            store.pending.put([item_id for (item_id, _), _ in encoded], np.stack([v for _, v in encoded]))
        count = len(moments) + consumed
        if progress:
            progress(count, total)
    for start in range(0, len(texts), 256):
        chunk = texts[start : start + 256]
        store.pending.put([i for i, _ in chunk], enc.encode_texts([t or "" for _, t in chunk]))
        count += len(chunk)
        if progress:
            progress(count, total)
    if unreadable and not drop_unembeddable:  # the pending vectors stay: a re-run resumes
        raise _refuse("could not be decoded", unreadable)
    with store.transaction():
        dropped = store.pending.swap_in()
        store.meta.set("model", target)
        store.meta.set("dim", str(enc.embed_dim))
        store.meta.set("tokenizer", encoder_tokenizer_record(enc) or None)
        store.meta.set("precision", precision)
        store.meta.set("pending_model", None)
        # A no-op when the swap logged rows (one generation per transaction); it bumps one when
        # it logged none (an empty library): the model change alone is a new generation then.
        store.bump_generation()
    if store.vector_files.large_mode:  # the old vectors' files (committed away above) are no longer needed
        store.vector_files.drop_unused()
    # Only images lack a pending vector (texts are always re-encoded); their captions go with them.
    n_dropped = len(dropped)
    return Reembedded(total - len(unreadable), n_dropped)


def _by_video(moments: list[tuple[int, bytes, float]]) -> dict[bytes, list[tuple[int, float]]]:
    """path -> (id, t) of its moments, by t."""
    out: dict[bytes, list[tuple[int, float]]] = {}
    for i, p, t in moments:
        out.setdefault(p, []).append((i, t))
    return {p: sorted(g, key=lambda m: m[1]) for p, g in out.items()}


def _encode_moments(enc: Encoder, path: bytes, group: list[tuple[int, float]]) -> np.ndarray:
    """The new vectors of a video's moments (``group``: (id, t) by t), from their frames at ``t``,
    in one decode of the video."""
    from clipdex.retrieval.video import VideoError, VideoReader

    with VideoReader(path) as reader:
        pictures = [
            f.picture for f in reader.frames(short_side=min(enc.image_size), at=[t for _, t in group])
        ]
    if len(pictures) != len(group):
        raise VideoError(f"{len(group) - len(pictures)} of its moments are no longer in the video")
    return enc.encode_pictures(pictures)
