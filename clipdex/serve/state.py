"""What `clipdex serve` shares between requests: the open Library and the locks around it.

One Library stays open with its model and indexes loaded. Store reads and index searches run under
one lock (they share a SQLite connection); the model's forward pass runs under its own lock, so
thumbnails, item details and "similar" are served while a query is being encoded, and text
queries that arrive meanwhile are encoded together in the next pass (serve.batching). Each request
follows other processes' writes (``Library.refresh``, or the Library call that does so itself:
``count``, ``search``), so they appear.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.exceptions import HTTPException

from clipdex.errors import DecodeError, QueryError
from clipdex.index.filters import Filter
from clipdex.kinds import TARGETS, kind_of
from clipdex.library import Library
from clipdex.results import path_b64, shown_path
from clipdex.serve.batching import TextBatcher
from clipdex.serve.heatmaps import HeatMaps
from clipdex.serve.thumbs import ThumbCache

MAX_RESULTS = 1000  # k + offset


def fail(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


class Served:
    """The loaded library and the locks that share it between request threads."""

    def __init__(self, lib: Library, thumbs: ThumbCache, watching: list[str] | None = None):
        self.lib = lib
        self.thumbs = thumbs
        self.watching = watching or []  # folders `serve --watch` follows (the page then polls /api/info)
        self.store_lock = threading.RLock()
        self.model_lock = threading.Lock()
        self.texts = TextBatcher(lib.encode_texts, self.model_lock)
        self.heat_maps = HeatMaps(keep=16)

    # ---- queries --------------------------------------------------------------------------
    def _kind(self, target: str) -> str:
        if target not in TARGETS:
            raise fail(400, "target must be 'images' or 'texts'")
        return kind_of(target)

    def _page(self, kind: str, k: int, offset: int, vector_of, filt: Filter | None = None,
              by: str | None = None, rank_text: str | None = None) -> dict:  # fmt: skip
        started = time.perf_counter()
        with self.store_lock:
            available = self.lib.count(kind, filt)  # follows other writers (a new model) itself
        results: list = []
        total = min(available, MAX_RESULTS)
        if available > offset:
            vector = vector_of()  # encoded outside the store lock
            with self.store_lock:
                hits = self.lib.search(vector=vector, k=k + offset, target=kind + "s", filter=filt, by=by,
                                       rank_text=rank_text or None)  # fmt: skip
            results = hits[offset:]
            if len(hits) < k + offset:  # every result there is (a min_score may cut the list)
                total = len(hits)
        return self._answer(results, started, total=total)

    def _answer(self, results: list, started: float, total: int) -> dict:
        with self.store_lock:
            spec = self.lib.spec
        return {
            "results": [_result(r) for r in results],
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
            "model": str(spec) if spec else None,
            "total": total,
        }

    def search(self, query: QueryOptions, k: int, offset: int, target: str, file: Path | None = None) -> dict:
        """A composed query: texts ``q`` (+ the uploaded image) minus texts ``not``, filtered.

        Terms are encoded one by one (texts through the batcher) and composed as the CLI does.
        """
        kind = self._kind(target)
        if query.by == "words" and not query.q:
            raise fail(400, "by=words ranks by the words of q: give q=TEXT")
        img = None
        if file is not None:
            try:
                img = self.lib.open_image(file)  # the indexing decoder: same pixel/bomb limits
            except DecodeError as e:
                raise fail(400, f"cannot read the uploaded image: {e}") from e
        try:  # weights in the composed order: q, the image, then the `not` texts
            plan = self.lib.plan_query(query.q or None, [img] if img is not None else None,
                                       query.nots or None, None, query.weights or None)  # fmt: skip
        except ValueError as e:
            raise fail(400, str(e)) from None

        def encode_images(images: list) -> np.ndarray:
            with self.model_lock:
                return self.lib.encode_images(images)

        def encode() -> np.ndarray:
            try:
                return self.lib.query_vector(
                    plan, lambda texts: np.stack([self.texts.encode(t) for t in texts]), encode_images
                )
            except QueryError as e:  # the terms cancel out: the request's fault
                raise fail(400, str(e)) from None

        return self._page(kind, k, offset, encode, query.filter, query.by, query.q)

    def similar(self, item_id: int, k: int) -> dict:
        started = time.perf_counter()
        with self.store_lock:  # no model here; lib.similar's search follows other writers itself
            rec = self._record(item_id)
            results = self.lib.similar(item_id, k=k)
            total = min(self.lib.count(rec["kind"]), MAX_RESULTS)
        return self._answer(results, started, total)

    # ---- items ----------------------------------------------------------------------------
    def _record(self, item_id: int) -> dict:
        rec = self.lib.item(item_id)  # None for an id out of SQLite's range too
        if rec is None:
            raise fail(404, f"no item with id {item_id}")
        return rec

    def item(self, item_id: int) -> dict:
        with self.store_lock:
            rec = self._record(item_id)
            captions = self.lib.captions(item_id) if rec["kind"] == "image" else []
            lines = self.lib.text_lines(item_id) if rec["kind"] == "image" else []
            linked = self.lib.item(rec["image_id"]) if rec["image_id"] is not None else None
        out: dict[str, Any] = {
            "id": rec["id"],
            "modality": rec["kind"],
            "source": rec["source"],
            "path": shown_path(rec["path"]),
            **path_b64(rec["path"]),
            "size": rec["size"],
            "mtime": rec["mtime_ns"] / 1e9 if rec["mtime_ns"] is not None else None,
        }
        if rec["source"] == "video":  # a moment of a video: the video plays from t
            out.update(modality="video", t=rec["t"], t_end=rec["t_end"], width=None, height=None)
            out["captions"] = []
            out["thumbnail"] = f"/api/items/{item_id}/thumbnail"
            out["file"] = f"/api/items/{item_id}/file"
            return out
        if rec["kind"] == "image":
            out.update(_dimensions(rec["path"]))
            out["captions"] = [{"id": i, "text": t} for i, t in captions]
            if lines:  # the text read in the picture, and each line with its box (fractions)
                out["ocr"] = "\n".join(line.text for line in lines)
                out["lines"] = [line.as_dict() for line in lines]
            out["thumbnail"] = f"/api/items/{item_id}/thumbnail"
            out["file"] = f"/api/items/{item_id}/file"
        else:
            out["text"] = rec["text"]
            out["image_id"] = rec["image_id"]
            if linked is not None and linked["path"] is not None:
                out.update(path=shown_path(linked["path"]), **path_b64(linked["path"]))
        return out

    def image_file(self, item_id: int) -> tuple[bytes, os.stat_result, dict]:
        """The image file of an item, if it still exists (and matches what was indexed)."""
        with self.store_lock:
            rec = self._record(item_id)
        if rec["kind"] != "image" or rec["path"] is None:
            raise fail(404, f"item {item_id} is not an image file")
        try:
            st = os.stat(rec["path"])
        except OSError:
            raise fail(404, f"the file of item {item_id} is gone") from None
        if not os.path.isfile(rec["path"]):
            raise fail(404, f"the file of item {item_id} is gone")
        return rec["path"], st, rec

    def thumbnail(self, item_id: int) -> tuple[bytes, str]:
        path, st, rec = self.image_file(item_id)
        try:  # a video's moment: the frame at its t
            return self.thumbs.get(item_id, path, st, rec.get("t")), ThumbCache.key(item_id, st)
        except DecodeError as e:
            raise fail(404, f"no thumbnail for item {item_id}: {e}") from e

    def original(self, item_id: int) -> bytes:
        path, st, rec = self.image_file(item_id)
        recorded = (rec["mtime_ns"], rec["size"])
        if recorded != (None, None) and recorded != (st.st_mtime_ns, st.st_size):
            raise fail(404, f"the file of item {item_id} changed since it was indexed")
        return path

    def explain(
        self, item_id: int, q: str, if_none_match: str | None = None
    ) -> tuple[bytes | None, float | None, str]:
        """(PNG, score, ETag): the picture of ``item_id`` with the heat map for text ``q``,
        rendered as `clipdex explain --out` renders it (over the original, at most 1024 px).

        When ``if_none_match`` is that ETag the map is not made (PNG None: answer 304); the score
        is then there only while the map is still kept."""
        q = q.strip()
        if not q:
            raise fail(400, "empty query: give q=TEXT")
        with self.store_lock:
            self.lib.refresh()
            spec = str(self.lib.spec)
        path, st, _ = self.image_file(item_id)

        def make() -> tuple[bytes, float]:
            try:
                picture = self.lib.open_image(path)
            except DecodeError as e:
                reason = f"cannot read image {os.fsdecode(path)}: {e}"
                raise fail(404, f"cannot explain item {item_id}: {reason}") from None
            with self.model_lock:  # held for all the passes: queries arriving meanwhile wait
                result = self.lib.explain(picture, q)
            return result.png(picture), result.score

        key = (item_id, st.st_mtime_ns, st.st_size, spec, q)
        etag = f'"{self.heat_maps.tag(key)}"'
        if if_none_match == etag:  # the client has it: no hundred forward passes to answer 304
            kept = self.heat_maps.kept(key)
            return None, kept[1] if kept else None, etag
        data, score, _ = self.heat_maps.get(key, make)
        return data, score, etag

    def info(self) -> dict:
        with self.store_lock:
            self.lib.refresh()
            info = self.lib.info()
            return {**info, "watching": self.watching} if self.watching else info


@dataclass
class QueryOptions:
    """The search parameters shared by GET and POST /api/search (besides k, offset, target)."""

    q: str = ""
    nots: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    filter: Filter | None = None
    by: str | None = None

    @classmethod
    def parse(
        cls, q: str | None, nots: list[str], weights: list[float], under: list[str], after: str | None,
        before: str | None, min_score: float | None, captioned: bool | None, words: list[str] | None = None,
        by: str | None = None, media: str | None = None,
    ) -> QueryOptions:  # fmt: skip
        from clipdex.errors import ClipdexError
        from clipdex.library.fusion import BY

        nots = [n.strip() for n in nots]
        if any(not n for n in nots):
            raise fail(400, "empty `not` term")
        if by is not None and by not in BY:
            raise fail(400, f"by must be one of {', '.join(BY)}")
        try:
            filt = Filter(
                under=[u for u in under if u], after=after or None, before=before or None,
                min_score=min_score, captioned=captioned, words=[w for w in words or [] if w.strip()],
                media=media or "all",
            )  # fmt: skip
        except (ValueError, ClipdexError) as e:
            raise fail(400, str(e)) from None
        active = filt.restricts_items or filt.min_score is not None
        return cls((q or "").strip(), nots, weights, filt if active else None, by)


def _result(r) -> dict:
    d = r.to_dict()
    if r.modality in ("image", "video"):
        d["thumbnail"] = f"/api/items/{r.id}/thumbnail"
    return d


def _dimensions(path: bytes | None) -> dict:
    """Width and height as shown (EXIF orientation applied), from the header only."""
    # The indexing decoder's header reader: within its pixel limit (an ICO decodes while opening).
    size = Library.image_size(path) if path is not None else None
    if size is None:  # missing, unreadable or too large now: the details still show
        return {"width": None, "height": None}
    return {"width": size[0], "height": size[1]}


def check_page(k: int, offset: int) -> None:
    if not 1 <= k <= MAX_RESULTS:
        raise fail(400, f"k must be between 1 and {MAX_RESULTS}")
    if offset < 0:
        raise fail(400, "offset must not be negative")
    if k + offset > MAX_RESULTS:
        raise fail(400, f"k + offset must not exceed {MAX_RESULTS}")
