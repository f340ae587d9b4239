"""`import-embeddings`: vectors computed elsewhere (a GPU cluster, clip-retrieval) into a library.

Everything is checked before anything is written. The model is loaded only for a new library (to
learn and record its dimension); an existing one is checked by its stored dim. Rows are keyed (an
image by its path, a text by its exact content), so a re-run adds nothing and a changed vector for
a known key updates that item in place. Rows with a ``t`` are video frames: a video (its path's
frames) is compared and replaced whole, as `index` does (`FrameMerge`). Rows go in by chunks of
100k (bounded memory) inside one transaction: an import that fails halfway leaves the library as it
was.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.index.faiss.ondisk import CHURN
from clipdex.index.faiss.ondisk_build import wanted
from clipdex.index.store.rows import Merged
from clipdex.inputs.embeddings import Embeddings, read_embeddings
from clipdex.inputs.spans import group_frames
from clipdex.kinds import IMAGE, TEXT
from clipdex.results import ImportCounts

if TYPE_CHECKING:
    from collections.abc import Iterator

    from clipdex.index.store.database import Store
    from clipdex.index.store.frame_merge import FramesMerged
    from clipdex.library.facade import Progress
    from clipdex.library.parts import Parts

FRAME_BATCH = 100_000  # video frames merged at a time (whole videos: a long one may exceed it)


def import_embeddings(
    parts: Parts,
    vectors_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    modality: str | None = None,
    progress: Progress | None = None,
    index_type: str | None = None,
    deferred: set[str] | None = None,
    ray: str | None = None,
) -> ImportCounts:
    """Store ``VECTORS.npy`` rows with their paths or texts from ``METADATA``; returns the counts.

    ``index_type`` sets the library's index type first (as `index --index-type` does). In
    large-library mode the array itself becomes the items' storage (see `_import_large`); with
    ``deferred`` the index is left for the caller to rebuild (the kind is added to the set).
    ``ray`` (a Ray address, or "local"): a rebuild of an on-disk index fills its blocks in Ray tasks.
    """
    data = read_embeddings(vectors_path, metadata_path, modality)
    kind = IMAGE if data.modality == "image" else TEXT
    counts = ImportCounts(missing_files=data.missing_files())
    with parts.writing():
        if index_type is not None:
            parts.indexes.set_index_type(index_type)
        parts.models.check(reembed=False)
        dim = parts.store.dim if parts.models.stored is not None else None
        if not dim:
            dim = parts.models.for_writing()[0].embed_dim  # records it: a new library
        if data.dim != dim:
            raise ClipdexError(
                f"{Path(vectors_path).name} holds {data.dim}-d vectors; this library's model "
                f"({parts.models.stored}) makes {dim}-d ones"
            )
        if data.count == 0:
            return counts
        store = parts.store
        if large_mode(parts, kind, data.count):
            _import_large(parts, data, kind, vectors_path, counts, progress, deferred, ray)
            return counts
        indexes = {k: parts.indexes.get(k) for k in (IMAGE, TEXT)}
        fresh = indexes[kind].ntotal == 0  # build once from all vectors (lets FAISS pick/train)
        all_ids = np.full(data.count, -1, np.int64)  # fresh: the new id of each row (-1: not new)
        all_vecs = np.empty((data.count, dim), np.float32) if fresh else None
        try:
            with store.bulk_load(), store.merge.session(), store.transaction():
                for start, vecs, merged in _merged(store, data, kind, counts, progress, out=all_vecs):
                    if fresh:  # all_vecs holds the rows: build once at the end
                        all_ids[start + merged.new_rows] = merged.new_ids
                    else:
                        _follow(parts, kind, merged, vecs)
                for rows, vecs, frames in _merged_frames(store, data, counts):
                    if fresh:
                        all_ids[rows[frames.new_rows]] = frames.new_ids
                    else:
                        _follow_frames(parts, frames, vecs)
                    if frames.removed_texts:  # the text index catches up from the change log
                        parts.indexes.forget(TEXT)
                        indexes.pop(TEXT, None)
        except BaseException:
            parts.indexes.forget(kind)  # it may hold rows that were rolled back
            raise
        gen = store.generation
        if all_vecs is not None and counts.imported:
            keep = all_ids >= 0
            if keep.all():
                indexes[kind] = parts.indexes.build(kind, all_ids, all_vecs, gen)
            else:  # rows that repeated a key: only the first of each is stored
                indexes[kind] = parts.indexes.build(kind, all_ids[keep], all_vecs[keep], gen)
            del all_vecs
        for idx in indexes.values():  # the other kind is unchanged: still valid at this generation
            idx.generation = gen
        parts.indexes.finish()
    return counts


def import_shard_dir(
    parts: Parts, folder: str | os.PathLike, progress: Progress | None = None,
    index_type: str | None = None, ray: str | None = None,
) -> ImportCounts:  # fmt: skip
    """Import a SHARD_DIR (`clipdex embed`'s output or clip-retrieval's) shard by shard.

    Each shard's arrays go through ``import_embeddings`` on their own, so memory stays bounded by
    one shard; a failing shard is undone, the shards before it stay imported. In large-library
    mode a big import (past a quarter of the library) rebuilds the index once at the end (its
    blocks filled in Ray tasks with ``ray``).
    """
    from clipdex.scale import require_pyarrow
    from clipdex.scale.shards import iter_shard_pairs

    require_pyarrow()
    pairs = list(iter_shard_pairs(folder))
    total = ImportCounts()
    deferred: set[str] = set()
    with parts.writing():
        if index_type is not None:
            parts.indexes.set_index_type(index_type)
        incoming = {IMAGE: 0, TEXT: 0}
        for vectors, _, modality in pairs:
            rows, dim = _shape(vectors)
            incoming[IMAGE if modality == "image" else TEXT] += rows
        store, index_type = parts.store, parts.indexes.index_type
        goes_large = any(wanted(store, k, index_type, n, dim) for k, n in incoming.items() if n)
        if goes_large and not store.vector_files.large_mode:
            # decided on the whole folder: no shard goes in as blobs first
            store.vector_files.enter_large_mode()
        # More than a quarter of the library: the index is rebuilt once, at the end.
        big = store.vector_files.large_mode and any(
            n > CHURN * store.items.count(k) for k, n in incoming.items() if n
        )
        try:
            for vectors, metadata, modality in pairs:
                counts = import_embeddings(
                    parts, vectors, metadata, modality, progress, deferred=deferred if big else None
                )
                total.imported += counts.imported
                total.updated += counts.updated
                total.unchanged += counts.unchanged
                total.missing_files += counts.missing_files
        finally:
            for kind in deferred:  # once, from the store, for everything imported before a failure too
                parts.indexes.rebuild(kind, _fill(ray))
            if deferred:
                parts.indexes.finish()
    return total


def large_mode(parts: Parts, kind: str, incoming: int) -> bool:
    """Whether this import goes to large-library mode (entering it when it is not yet)."""
    store = parts.store
    if store.vector_files.large_mode:
        return True
    if store.dim is None or not wanted(store, kind, parts.indexes.index_type, incoming):
        return False
    store.vector_files.enter_large_mode()  # the vectors already stored move into vector files
    return True


def _import_large(
    parts: Parts, data: Embeddings, kind: str, vectors_path: str | os.PathLike, counts: ImportCounts,
    progress: Progress | None, deferred: set[str] | None, ray: str | None = None,
) -> None:  # fmt: skip
    """Large-library mode: the array is hard-linked (or copied as float16) into LIBRARY/vectors/ and
    its rows are the new items' vectors; no float32 copy of it is kept anywhere. The index
    follows the commit incrementally, or is rebuilt once when the import is big (or ``deferred``)."""
    store = parts.store
    before = store.items.count(kind)
    rebuild = data.count > CHURN * before
    if deferred is None and not rebuild:
        parts.indexes.get(kind)  # loaded and caught up before the commit, then follows it
    try:
        with store.bulk_load(), store.merge.session(), store.transaction():
            fid = store.vector_files.link(vectors_path)  # durable before the rows reference it
            for _, vecs, merged in _merged(store, data, kind, counts, progress, fid=fid):
                if deferred is None and not rebuild:
                    _follow(parts, kind, merged, vecs)
            for _, vecs, frames in _merged_frames(store, data, counts, fid=fid):
                if deferred is None and not rebuild:
                    _follow_frames(parts, frames, vecs)
                if frames.removed_texts:  # the text index catches up from the change log
                    parts.indexes.forget(TEXT)
    except BaseException:
        parts.indexes.forget(kind)
        store.vector_files.remove_orphans()  # the linked file, unreferenced after the rollback
        raise
    if not (counts.imported or counts.updated):  # every row unchanged: no item references the link
        store.vector_files.drop_unused([fid])
    if deferred is not None:
        deferred.add(kind)
        return
    if rebuild and (counts.imported or counts.updated):
        parts.indexes.rebuild(kind, _fill(ray))
    parts.indexes.finish()


def _fill(ray: str | None) -> Any:
    """How an on-disk index's blocks are filled: in Ray tasks on ``ray``'s cluster, or here."""
    if ray is None:
        return None
    from clipdex.scale.ray_fill import RayFill

    return RayFill(ray)


def _shape(vectors: str | os.PathLike) -> tuple[int, int]:
    """(rows, dim) of a .npy array, from its header."""
    shape = np.load(vectors, mmap_mode="r", allow_pickle=False).shape
    return int(shape[0]), int(shape[-1])


def _merged(
    store: Store, data: Embeddings, kind: str, counts: ImportCounts, progress: Progress | None,
    fid: int | None = None, out: np.ndarray | None = None,
) -> Iterator[tuple[int, np.ndarray, Merged]]:  # fmt: skip
    """Merge ``data`` into the store chunk by chunk (keyed by path or text), counting and
    reporting progress; yields (first row, vectors, what the merge did) per chunk. ``fid``: the
    rows sit in that vector file (large-library mode); ``out``: `Embeddings.chunks`'s buffer."""
    for start, vecs in data.chunks(out=out):
        stop = start + len(vecs)
        keys = data.paths(start, stop) if kind == IMAGE else data.values[start:stop]
        located = (fid, np.arange(start, stop)) if fid is not None else None
        pictures = data.picture_rows(start, stop)  # None: every row (no video frames)
        if pictures is None:
            merged = store.merge.keyed(kind, "import", keys, vecs, located=located)
        elif len(pictures):  # the frame rows are `_merged_frames`'s
            sub = store.merge.keyed(
                kind, "import", [keys[r] for r in pictures.tolist()], vecs[pictures],
                located=None if located is None else (fid, located[1][pictures]),
            )  # fmt: skip
            merged = replace(sub, new_rows=pictures[sub.new_rows], updated_rows=pictures[sub.updated_rows])
        else:
            merged = Merged(*(np.empty(0, np.int64),) * 4, 0)
        counts.count(merged)
        yield start, vecs, merged
        if progress:
            progress(stop, data.count)


def _merged_frames(
    store: Store, data: Embeddings, counts: ImportCounts, fid: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, FramesMerged]]:
    """Merge ``data``'s video frame rows, whole videos at a time (up to ``FRAME_BATCH`` frames a
    batch); yields (the batch's input rows, their vectors, what the merge did)."""
    if data.t is None:
        return
    rows, starts, repeated = group_frames(data.values, data.t)
    counts.unchanged += repeated  # a (path, t) given again: the first row counts
    bounds = [*starts.tolist(), len(rows)]
    k = 0
    while k < len(starts):
        end = k + 1  # whole videos, at least one
        while end < len(starts) and bounds[end + 1] - bounds[k] <= FRAME_BATCH:
            end += 1
        lo, hi = bounds[k], bounds[end]
        batch = rows[lo:hi]
        vecs = data.rows(batch)
        paths = [os.fsencode(data.values[r]) for r in batch[np.asarray(starts[k:end]) - lo].tolist()]
        spans = np.stack([data.t[batch], data.t_end[batch]], axis=1)
        located = (fid, batch) if fid is not None else None
        frames = store.frame_merge.videos(paths, starts[k:end] - lo, spans, vecs, located=located)
        counts.imported += frames.imported
        counts.updated += frames.updated
        counts.unchanged += frames.unchanged
        yield batch, vecs, frames
        k = end


def _follow(parts: Parts, kind: str, merged: Merged, vecs: np.ndarray) -> None:
    """The index follows one merged chunk: an update is a removal and an add of the same id."""
    ids = np.concatenate([merged.updated_ids, merged.new_ids])
    rows = np.concatenate([merged.updated_rows, merged.new_rows])
    parts.indexes.apply(kind, (ids, vecs[rows]), merged.updated_ids.tolist())


def _follow_frames(parts: Parts, frames: FramesMerged, vecs: np.ndarray) -> None:
    """The image index follows one batch of videos: replaced frames out, new frames in."""
    parts.indexes.apply(IMAGE, (frames.new_ids, vecs[frames.new_rows]), frames.removed_images)
