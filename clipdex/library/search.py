"""Searching a library: queries (a vector, or composed text/image terms), filters, similar items,
duplicates. A `Searcher` receives the parts it reads (store, indexes, model slot); `Library`
holds one and hands its searches to it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.index.filters import Filter
from clipdex.index.store.items import VIDEO
from clipdex.kinds import IMAGE, TEXT, kind_of
from clipdex.library.queries import Encode, QueryPlan, encode_images, vector_query
from clipdex.results import DuplicateItem, SearchResult
from clipdex.retrieval.query import Terms, Weights

if TYPE_CHECKING:
    from clipdex.index.faiss.index_set import IndexSet
    from clipdex.index.store.database import Store
    from clipdex.index.store.rows import Item
    from clipdex.library.model_slot import ModelSlot


def _result(
    rank: int, score: float, kind: str, item_id: int, it: Item, linked: dict[int, Item]
) -> SearchResult:
    """The one builder of a hit: an image's own path, or a text's linked image's (bytes kept)."""
    path = it.path if kind == IMAGE else (linked[it.image_id].path if it.image_id in linked else None)
    name = os.fsdecode(path) if path is not None else None
    if it.source == VIDEO:
        return SearchResult(rank, score, "video", item_id, name, raw_path=path, t=it.t, t_end=it.t_end)
    return SearchResult(rank, score, kind, item_id, name, it.text if kind == TEXT else None, raw_path=path)


class Searcher:
    """The read side of a library: reads its store and indexes, encodes queries with its model."""

    def __init__(self, path: Path, store: Store, indexes: IndexSet, models: ModelSlot, gpu_index: bool):
        self.path = path
        self.store = store
        self.indexes = indexes
        self.models = models
        self.gpu_index = gpu_index

    def search(
        self, terms: Terms, vector: Any, k: int, target: str, weights: Weights, filter: Filter | None,
        by: str = "meaning", rank_text: str | None = None, per_video: int | None = None,
    ) -> list[SearchResult]:  # fmt: skip
        """`Library.search` once its arguments are sorted into ``terms`` (or a ``vector``); ``by``
        words or both ranks (also) by ``rank_text``'s words (see `clipdex.library.fusion`);
        ``per_video`` keeps at most that many moments of each video (its best ones)."""
        from clipdex.index import filters
        from clipdex.library.fusion import fused_search

        if vector is not None and terms.count:
            raise ValueError("give vector= alone, or text=/image= terms (with not_text=/not_image=)")
        if vector is None and not terms.positives:
            raise ValueError("give text=, image= or vector= (negative terms alone are not a query)")
        if k < 1:
            raise ValueError("k must be at least 1")
        if per_video is not None and per_video < 1:
            raise ValueError("per_video must be at least 1")
        kind = kind_of(target)
        if filter is not None and not isinstance(filter, Filter):
            raise TypeError("filter must be a clipdex.Filter")
        index = self.indexes.view(kind, self.models.follow())  # one generation read when nothing changed
        if index.ntotal == 0:
            what = "images" if kind == IMAGE else "texts"
            raise ClipdexError(f"the library at {self.path} has no {what} to search")
        if vector is not None:
            query = vector_query(vector, index.dim)
        else:
            query = self.query_vector(QueryPlan(terms, terms.weights(weights)))
        index.use_gpu = self.gpu_index
        items: dict[int, Item] = {}  # the rows of the candidates re-ranked (read with their vectors)
        fetch = partial(self.store.vectors.get, items=items)
        depth = k if not per_video else min(max(index.ntotal, 1), 4 * k)
        while True:
            if by != "meaning" and rank_text:
                ranked = partial(filters.search, index, self.store, kind, query, get_vectors=fetch)
                hits = fused_search(ranked, self.store, kind, query, depth, filter, by, rank_text)
            else:
                hits = filters.search(index, self.store, kind, query, depth, filter, fetch)
            if not per_video:
                break
            kept = self._per_video(hits, per_video)
            if len(kept) >= k or len(hits) < depth or depth >= index.ntotal:
                hits = kept[:k]
                break
            depth = min(index.ntotal, depth * 4)  # the best moments repeat a few videos: read deeper
        items.update(self.store.items.get([i for i, _ in hits if i not in items]))
        linked = {}  # a caption's image, whose path a text result shows
        if kind == TEXT:
            linked = self.store.items.get(
                [items[i].image_id for i, _ in hits if items[i].image_id is not None]
            )
        results = [
            _result(rank, score, kind, item_id, items[item_id], linked)
            for rank, (item_id, score) in enumerate(hits, start=1)
        ]
        return self.with_text_read(results)

    def _per_video(self, hits: list[tuple[int, float]], most: int) -> list[tuple[int, float]]:
        """``hits`` (best first) keeping at most ``most`` of each video's moments."""
        videos = self.store.frames.video_paths([i for i, _ in hits])
        seen: dict[bytes, int] = {}
        out = []
        for i, score in hits:
            path = videos.get(i)
            if path is not None:
                seen[path] = seen.get(path, 0) + 1
                if seen[path] > most:
                    continue
            out.append((i, score))
        return out

    def with_text_read(self, results: list[SearchResult]) -> list[SearchResult]:
        """``results`` with the text read in each picture (``ocr``), where there is any."""
        from dataclasses import replace

        found = self.store.texts.text([r.id for r in results if r.modality == IMAGE])
        return [replace(r, ocr=found[r.id]) if r.id in found else r for r in results]

    def count(self, target: str = "images", filter: Filter | None = None) -> int:
        """How many items of ``target`` a search can return now: from the caught-up index (the same
        view `search` uses), so a long-running reader counts without a table scan. With a
        ``filter`` that restricts items (folders, dates, captions): how many of them pass it."""
        kind = kind_of(target)
        if filter is not None and filter.restricts_items:
            self.models.follow()  # matching_ids only reads SQLite: follow other writers first
            return len(self.store.selection.matching_ids(kind, filter))
        return self.indexes.view(kind, self.models.follow()).ntotal

    def preload(self) -> None:
        """For a long-lived process (serve, a notebook answering many queries): bring the
        memory-mapped indexes' pages in now, so that early searches pay no page faults (see
        `VectorIndex.touch`). Costs about one exact scan; a one-shot search does not call it."""
        for kind in (IMAGE, TEXT):
            self.indexes.view(kind, self.models.follow()).touch()

    def query_vector(
        self, plan: QueryPlan, encode_text: Encode | None = None, encode_image: Encode | None = None
    ) -> np.ndarray:
        """``plan``'s vector with the library's model (or the encoders given, e.g. batched ones)."""
        models = self.models
        return plan.vector(
            encode_text or models.encode_texts,
            encode_image or (lambda images: encode_images(images, models.encode_pictures, models.image_size)),
        )

    def duplicates(
        self, threshold: float = 0.95, under: Sequence[str | os.PathLike | bytes] | str | None = None
    ) -> list[list[DuplicateItem]]:
        """Groups of near-identical images (cosine >= ``threshold`` between neighbours, joined
        transitively), optionally only among images under some folders. Largest group first; in
        a group the best quality first (most pixels, then largest file), each with its score
        against that first image. Uses the stored vectors only: no model, no decoding."""
        from clipdex.index.duplicates import find_duplicates
        from clipdex.retrieval.decode import image_size

        if not -1.0 <= threshold <= 1.0:
            raise ValueError("threshold must lie between -1 and 1 (a cosine similarity)")
        roots = [under] if isinstance(under, (str, bytes, os.PathLike)) else list(under or [])
        return find_duplicates(self.store, threshold, roots, dims_of=image_size)

    def similar(self, item: int | str | os.PathLike | bytes, k: int = 10) -> list[SearchResult]:
        """More like a stored item, ranked by its stored vector (no model, no re-encoding).

        The item itself comes first, then the others of its modality by score, ties by id.
        ``item`` is an id, or a path of an image in the library (see ``resolve_item``).
        """
        from dataclasses import replace

        if k < 1:
            raise ValueError("k must be at least 1")
        item_id = self.resolve_item(item)
        it = self.store.items.get([item_id])[item_id]
        vec = self.store.vectors.get([item_id])[0]
        hits = self.search(Terms.of(), vec, k + 1, it.kind + "s", None, None)
        # Built here rather than found among the hits: exact duplicates with lower ids may fill them.
        linked = self.store.items.get([it.image_id]) if it.image_id is not None else {}
        first = _result(1, float(np.dot(vec, vec) / np.linalg.norm(vec)), it.kind, item_id, it, linked)
        (first,) = self.with_text_read([first])  # like the hits that `search` gave
        ranked = [first] + [h for h in hits if h.id != item_id][: k - 1]
        return [replace(h, rank=n) for n, h in enumerate(ranked, start=1)]

    def resolve_item(self, item: int | str | os.PathLike | bytes) -> int:
        """An item id from an id or an image path: all digits and not an existing file is an id;
        a path must be an image in the library. Raises ClipdexError otherwise."""
        from clipdex.inputs.paths import display_path

        if isinstance(item, str) and item.isascii() and item.isdigit() and not os.path.isfile(item):
            item = int(item)
        if isinstance(item, int):
            if not 0 <= item < 2**63 or self.store.items.record(item) is None:
                raise ClipdexError(f"no item with id {item} in the library at {self.path}")
            return item
        raw = os.fsencode(os.path.expanduser(item) if isinstance(item, str) else item)
        for candidate in (os.path.abspath(raw), os.path.realpath(raw)):
            found = self.store.items.image_id_by_path(candidate)
            if found is not None:
                return found
        raise ClipdexError(f"{display_path(raw)} is not in the library at {self.path}")
