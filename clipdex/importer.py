"""`import-embeddings`: vectors computed elsewhere (a GPU cluster, clip-retrieval) into a library.

Everything is checked before anything is written. The model is loaded only for a new library (to
learn and record its dimension); an existing one is checked by its stored dim. Rows go in by
chunks of 100k (bounded memory); an import that fails halfway is undone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.index.imports import read_embeddings
from clipdex.index.store import IMAGE, TEXT

if TYPE_CHECKING:
    from clipdex.library import Library, Progress


def import_embeddings(
    lib: Library,
    vectors_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    modality: str | None = None,
    progress: Progress | None = None,
) -> int:
    """Store ``VECTORS.npy`` rows with their paths or texts from ``METADATA``; returns the count."""
    data = read_embeddings(vectors_path, metadata_path, modality)
    kind = IMAGE if data.modality == "image" else TEXT
    with lib.writing():
        lib.check_model(reembed=False)
        dim = lib.store.dim if lib.spec is not None else None
        if not dim:
            dim = lib.writer_model().embed_dim
        if data.dim != dim:
            raise ClipdexError(
                f"{Path(vectors_path).name} holds {data.dim}-d vectors; this library's model "
                f"({lib.spec}) makes {dim}-d ones"
            )
        if data.count == 0:
            return 0
        indexes = {k: lib.indexes.get(k) for k in (IMAGE, TEXT)}
        fresh = indexes[kind].ntotal == 0  # build once from all vectors (lets FAISS pick/train)
        all_ids = np.empty(data.count, np.int64)
        all_vecs = np.empty((data.count, dim), np.float32) if fresh else None
        done = 0
        try:
            with lib.store.bulk_load():
                for start, vecs in data.chunks(out=all_vecs):  # into all_vecs when fresh
                    stop = start + len(vecs)
                    ids = lib.store.insert_many(
                        kind, "import", vecs,
                        paths=data.paths(start, stop) if kind == IMAGE else None,
                        texts=data.values[start:stop] if kind == TEXT else None,
                    )  # fmt: skip
                    all_ids[start:stop] = ids
                    done = stop
                    if all_vecs is None:
                        lib.indexes.apply(kind, (ids, vecs), [])
                        lib.indexes.maybe_save()
                    if progress:
                        progress(done, data.count)
        except BaseException:
            lib.indexes.forget(kind)
            if done:  # all or nothing: take back the chunks already committed
                lib.store.delete(all_ids[:done].tolist())
            raise
        gen = lib.store.generation
        if all_vecs is not None:
            indexes[kind] = lib.indexes.build(kind, all_ids, all_vecs, gen)
            del all_vecs
        for idx in indexes.values():  # the other kind is unchanged: still valid at this generation
            idx.generation = gen
        lib.indexes.finish()
    return data.count
