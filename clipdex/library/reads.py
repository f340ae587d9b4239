"""The reading half of the `Library` door: encoding, pictures, searching and looking items up.

`Library` (clipdex.library.facade) inherits these verbs; they use the parts its ``__init__``
sets up (``store``, ``models``, ``searcher``, ``parts``) and never take the writer lock.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clipdex.index.filters import Filter
from clipdex.library.queries import Encode, ImageArg, QueryPlan, encode_images
from clipdex.results import DuplicateItem, SearchResult, TextLine
from clipdex.retrieval.models import resolve_spec
from clipdex.retrieval.query import Terms, Weights

if TYPE_CHECKING:
    from clipdex.index.store.database import Store
    from clipdex.library.model_slot import ModelSlot
    from clipdex.library.parts import Parts
    from clipdex.library.search import Searcher
    from clipdex.retrieval.models import LoadedModel


class LibraryReads:
    """Searches and reads of a library (mixed into `Library`)."""

    store: Store
    models: ModelSlot
    searcher: Searcher
    parts: Parts
    model: LoadedModel  # Library's property: the library's model, loaded once

    # ---- following other processes ------------------------------------------------------
    def refresh(self) -> None:
        """Catch up with other processes (a long-running reader calls this per request): the next
        query loads the library's new model if another process changed it; the indexes catch up
        from the change log on their next search."""
        self.models.follow()

    # ---- reporting and explaining ---------------------------------------------------------
    def info(self) -> dict:
        """Model, dimension, counts by kind, index types, paths and sizes on disk, the storage mode;
        see `clipdex.library.info`."""
        from clipdex.library.info import describe

        return describe(self.parts)

    def explain(
        self, image: ImageArg | Any, text: str | None = None, vector: Any = None, *, model: str | None = None
    ) -> Any:
        """Occlusion heat map of ``image`` (a file, or a picture from `open_image`) for a ``text``
        (or query ``vector``), with the library's model or ``model`` (any ``--model`` value).

        Returns a `clipdex.retrieval.explain.Explanation`: ``.score`` (the cosine search reports),
        ``.heat``, ``.png(original)``; see that module for the method.
        """
        from clipdex.library.tools import explain_picture

        lm = self.models.load(resolve_spec(model)) if model else self.model
        return explain_picture(image, text, vector, lm, self.store.dim)

    @property
    def query_runtime(self) -> str:
        """What encodes queries: ``torch``, or e.g. ``onnx (CPUExecutionProvider, fp32)``."""
        return self.models.runtime_name

    # ---- encoding and pictures ----------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, D) unit vectors in the library's space (by the query runtime: ONNX when the
        library has graphs for its model, see `clipdex.library.runtime`)."""
        return self.models.encode_texts(list(texts))

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Image files or pictures (from `open_image`) -> (N, D) unit vectors, in one batch."""
        return encode_images(images, self.models.encode_pictures, self.models.image_size)

    @staticmethod
    def open_image(path: ImageArg, draft_to: tuple[int, int] | None = None) -> Any:
        """The picture at ``path`` as indexing decodes it (EXIF orientation applied, within the
        pixel limits), a PIL RGB image; `clipdex.errors.DecodeError` when unreadable. With
        ``draft_to`` a large JPEG decodes at reduced scale (never below that size)."""
        from clipdex.retrieval.decode import open_image

        return open_image(path, draft_to)

    @staticmethod
    def video_frame(path: ImageArg, t: float, short_side: int = 256) -> Any:
        """The frame of the video at ``path`` shown at ``t`` seconds (PIL RGB, display rotation
        applied, shortest side at most ``short_side``); `clipdex.errors.DecodeError` when unreadable."""
        from clipdex.retrieval.video import frame_at

        return frame_at(path, t, short_side)

    @staticmethod
    def image_size(path: ImageArg) -> tuple[int, int] | None:
        """(width, height) as shown (EXIF orientation applied), from the header only; None when
        the file is missing, unreadable or past the pixel limit."""
        from clipdex.retrieval.decode import image_size

        return image_size(path)

    # ---- searching (see clipdex.library.search) -------------------------------------------
    def search(
        self,
        text: str | Sequence[str] | None = None,
        image: ImageArg | Sequence[ImageArg] | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        k: int = 10,
        target: str = "images",
        *,
        not_text: str | Sequence[str] | None = None,
        not_image: ImageArg | Sequence[ImageArg] | None = None,
        weights: Weights = None,
        filter: Filter | None = None,
        words: str | Sequence[str] | None = None,
        by: str | None = None,
        rank_text: str | None = None,
        per_video: int | None = None,
    ) -> list[SearchResult]:
        """Best ``k`` items of ``target`` ("images" or "texts") for one query, best first.

        The query is ``vector`` (an embedding in the library's space), or a composed query: any
        number of ``text`` and ``image`` terms (a value or a list each), minus ``not_text`` and
        ``not_image`` terms; its vector is the normalised weighted sum of the positive terms' unit
        vectors minus the negative ones'. ``weights`` is one non-negative number per term in the
        order text, image, not_text, not_image, or a mapping from those names to a number (all
        terms of that name) or a list (default: all 1). ``filter`` (`clipdex.Filter`) keeps only
        items under some folders, in a date range, with or without captions, above a score; the
        result is still the best k among the items that match. ``words`` keeps only items whose
        text read in the picture, caption or file name match every one of them (FTS5 syntax).
        ``by``: "meaning" ranks by the vectors, "words" by BM25 over the query's words, "both"
        fuses the two (RRF, k = 60); default "both" in a library that reads text (``index(ocr=
        True)``) when the query has text, else "meaning". The words ranked are the ``text`` terms,
        or ``rank_text`` (a ``vector`` query's text, as the server encodes it separately).
        Scores are always the cosines. A video's moments are results of modality "video" with
        ``t``/``t_end``; ``per_video=1`` keeps each video only at its best moment (``filter``'s
        ``media`` keeps photos or videos only).
        """
        from clipdex.library.fusion import ranking

        terms = Terms.of(text, image, not_text, not_image)
        rank_text = rank_text or " ".join(terms.text) or None
        filter, by = ranking(filter, words, by, rank_text, self.reads_text)
        return self.searcher.search(terms, vector, k, target, weights, filter, by, rank_text, per_video)

    @property
    def reads_text(self) -> bool:
        """Whether this library reads the text in its pictures (``index(ocr=True)``, remembered)."""
        from clipdex.library.reading import OCR_KEY

        return self.store.meta.get(OCR_KEY) == "on"

    def caption_pairs(self, captions_from: str = "sidecars") -> list[tuple[str, str]]:
        """The library's (image path, caption) pairs: sidecar captions, text read (``"ocr"``) or
        ``"all"``; what ``finetune`` trains on without PAIRS, and ``evaluate`` can measure."""
        from clipdex.library.finetuning import library_pairs

        return library_pairs(self.parts, captions_from)

    def text_lines(self, item_id: int) -> list[TextLine]:
        """The lines of text read in picture ``item_id`` (reading order, boxes, confidence)."""
        return self.store.texts.lines([item_id]).get(item_id, [])

    def plan_query(self, text: Any = None, image: Any = None, not_text: Any = None, not_image: Any = None,
                   weights: Weights = None) -> QueryPlan:  # fmt: skip
        """A composed query's terms and weights, checked (ValueError) before anything is encoded."""
        return QueryPlan.of(text, image, not_text, not_image, weights)

    def query_vector(
        self, plan: QueryPlan, encode_texts: Encode | None = None, encode_images: Encode | None = None
    ) -> np.ndarray:
        """``plan``'s unit vector, with the library's model or the encoders given (the server
        batches texts across requests); `clipdex.errors.QueryError` when its terms cancel out."""
        return self.searcher.query_vector(plan, encode_texts, encode_images)

    def count(self, target: str = "images", filter: Filter | None = None) -> int:
        """How many items of ``target`` a search can return now (with ``filter``: how many pass
        its folder, date and caption conditions)."""
        return self.searcher.count(target, filter)

    def preload(self) -> None:
        """Bring the indexes' pages into memory now (for a long-lived process)."""
        self.searcher.preload()

    def similar(self, item: int | str | os.PathLike | bytes, k: int = 10) -> list[SearchResult]:
        """More like a stored item (an id or an image path), from its stored vector; itself first."""
        return self.searcher.similar(item, k)

    def duplicates(
        self, threshold: float = 0.95, under: Sequence[str | os.PathLike | bytes] | str | None = None
    ) -> list[list[DuplicateItem]]:
        """Groups of near-identical images, largest first, best quality first in each."""
        return self.searcher.duplicates(threshold, under)

    def resolve_item(self, item: int | str | os.PathLike | bytes) -> int:
        """An item id from an id or an image path of the library (ClipdexError otherwise)."""
        return self.searcher.resolve_item(item)

    def item(self, item_id: int) -> dict | None:
        """The stored record of ``item_id`` (kind, source, path, size, mtime_ns, text, image_id), or None."""
        return self.store.items.record(item_id) if 0 <= item_id < 2**63 else None

    def captions(self, item_id: int) -> list[tuple[int, str]]:
        """(id, text) of the captions linked to image ``item_id``."""
        return self.store.items.captions_of(item_id)
