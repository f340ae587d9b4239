"""The FastAPI app of `clipdex serve`: JSON API under /api, the page at /, its files under /static.

One Library stays open with its model and indexes loaded. Store reads and index searches run under
one lock (they share a SQLite connection); the model's forward pass runs under its own lock, so
thumbnails, item details and "similar" are served while a query is being encoded, and text
queries that arrive meanwhile are encoded together in the next pass (serve.batching). Blocking work runs
in the threadpool. Each request follows other processes' writes (``Library.refresh``, or the Library
call that does so itself: ``count``, ``search``), so they appear.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from clipdex.errors import ClipdexError
from clipdex.index.filters import Filter
from clipdex.library import Library
from clipdex.results import path_b64, shown_path
from clipdex.retrieval.query import Terms, compose
from clipdex.serve.batching import TextBatcher
from clipdex.serve.heatmaps import HeatMaps
from clipdex.serve.security import COOKIE, Guard, HostPolicy, TokenAuth, UploadTooLarge
from clipdex.serve.thumbs import DecodeError, ThumbCache, cache_folder

MAX_RESULTS = 1000  # k + offset
MAX_ID = 2**63 - 1
STATIC = Path(str(resources.files("clipdex.serve") / "static"))


class Login(BaseModel):
    token: str


def fail(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


class Served:
    """The loaded library and the locks that share it between request threads."""

    def __init__(self, lib: Library, thumbs: ThumbCache):
        self.lib = lib
        self.thumbs = thumbs
        self.store_lock = threading.RLock()
        self.model_lock = threading.Lock()
        self.texts = TextBatcher(self._encode_texts, self.model_lock)
        self.heat_maps = HeatMaps(keep=16)

    def _encode_texts(self, texts):
        from clipdex.retrieval.embed import encode_texts

        return encode_texts(self.lib.model, texts)

    # ---- queries --------------------------------------------------------------------------
    def _kind(self, target: str) -> str:
        if target not in ("images", "texts"):
            raise fail(400, "target must be 'images' or 'texts'")
        return target[:-1]

    def _page(self, kind: str, k: int, offset: int, vector_of, filt: Filter | None = None) -> dict:
        started = time.perf_counter()
        with self.store_lock:
            if filt is not None and filt.restricts_items:
                self.lib.refresh()  # matching_ids only reads SQLite: follow other writers before encoding
                available = len(self.lib.store.items.matching_ids(kind, filt))
            else:
                available = self.lib.count(kind)  # follows other writers (a new model) itself
        results: list = []
        total = min(available, MAX_RESULTS)
        if available > offset:
            vector = vector_of()  # encoded outside the store lock
            with self.store_lock:
                hits = self.lib.search(vector=vector, k=k + offset, target=kind + "s", filter=filt)
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
        terms = Terms.of(query.q or None, None, query.nots or None, None)
        image_terms = 1 if file is not None else 0
        try:  # weights in the composed order: q, the image, then the `not` texts
            w = Terms(terms.text, [None] * image_terms, terms.not_text, []).weights(query.weights or None)
        except ValueError as e:
            raise fail(400, str(e)) from None
        img = None
        if file is not None:
            from clipdex.retrieval.decode import open_image

            try:
                img = open_image(file)  # the indexing decoder: same pixel/bomb limits
            except DecodeError as e:
                raise fail(400, f"cannot read the uploaded image: {e}") from e

        def encode() -> np.ndarray:
            vectors = [self.texts.encode(t) for t in terms.text]
            if img is not None:
                from clipdex.retrieval.embed import encode_image_batch

                with self.model_lock:
                    lm = self.lib.model
                    vectors.append(encode_image_batch(lm, lm.preprocess(img)[None])[0])
            vectors += [self.texts.encode(t) for t in terms.not_text]
            signs = np.array([1.0] * (len(terms.text) + image_terms) + [-1.0] * len(terms.not_text))
            try:
                return compose(np.stack(vectors), signs, w)
            except ClipdexError as e:  # the terms cancel out: the request's fault
                raise fail(400, str(e)) from None

        return self._page(kind, k, offset, encode, query.filter)

    def similar(self, item_id: int, k: int) -> dict:
        started = time.perf_counter()
        with self.store_lock:  # no model here; lib.similar's search follows other writers itself
            rec = self._record(item_id)
            results = self.lib.similar(item_id, k=k)
            total = min(self.lib.count(rec["kind"]), MAX_RESULTS)
        return self._answer(results, started, total)

    # ---- items ----------------------------------------------------------------------------
    def _record(self, item_id: int) -> dict:
        rec = self.lib.store.items.record(item_id) if 0 <= item_id <= MAX_ID else None
        if rec is None:
            raise fail(404, f"no item with id {item_id}")
        return rec

    def item(self, item_id: int) -> dict:
        with self.store_lock:
            rec = self._record(item_id)
            captions = self.lib.store.items.captions_of(item_id) if rec["kind"] == "image" else []
            linked = self.lib.store.items.record(rec["image_id"]) if rec["image_id"] is not None else None
        out: dict[str, Any] = {
            "id": rec["id"],
            "modality": rec["kind"],
            "source": rec["source"],
            "path": shown_path(rec["path"]),
            **path_b64(rec["path"]),
            "size": rec["size"],
            "mtime": rec["mtime_ns"] / 1e9 if rec["mtime_ns"] is not None else None,
        }
        if rec["kind"] == "image":
            out.update(_dimensions(rec["path"]))
            out["captions"] = [{"id": i, "text": t} for i, t in captions]
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
        path, st, _ = self.image_file(item_id)
        try:
            return self.thumbs.get(item_id, path, st), ThumbCache.key(item_id, st)
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
        from clipdex.retrieval.explain import explain, open_for_explain

        q = q.strip()
        if not q:
            raise fail(400, "empty query: give q=TEXT")
        with self.store_lock:
            self.lib.refresh()
            spec = str(self.lib.spec)
        path, st, _ = self.image_file(item_id)

        def make() -> tuple[bytes, float]:
            try:
                picture = open_for_explain(path)
            except ClipdexError as e:
                raise fail(404, f"cannot explain item {item_id}: {e}") from None
            target = self.texts.encode(q)  # takes the model lock itself
            with self.model_lock:  # held for all the passes: queries arriving meanwhile wait
                result = explain(self.lib.model, picture, target)
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
            return self.lib.info()


@dataclass
class QueryOptions:
    """The search parameters shared by GET and POST /api/search (besides k, offset, target)."""

    q: str = ""
    nots: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    filter: Filter | None = None

    @classmethod
    def parse(
        cls, q: str | None, nots: list[str], weights: list[float], under: list[str], after: str | None,
        before: str | None, min_score: float | None, captioned: bool | None,
    ) -> QueryOptions:  # fmt: skip
        nots = [n.strip() for n in nots]
        if any(not n for n in nots):
            raise fail(400, "empty `not` term")
        try:
            filt = Filter(
                under=[u for u in under if u], after=after or None, before=before or None,
                min_score=min_score, captioned=captioned,
            )  # fmt: skip
        except ValueError as e:
            raise fail(400, str(e)) from None
        active = filt.restricts_items or filt.min_score is not None
        return cls((q or "").strip(), nots, weights, filt if active else None)


def _result(r) -> dict:
    d = r.to_dict()
    if r.modality == "image":
        d["thumbnail"] = f"/api/items/{r.id}/thumbnail"
    return d


def _dimensions(path: bytes | None) -> dict:
    """Width and height as shown (EXIF orientation applied), from the header only."""
    from clipdex.retrieval.decode import image_size

    # The indexing decoder's header reader: within its pixel limit (an ICO decodes while opening).
    size = image_size(path) if path is not None else None
    if size is None:  # missing, unreadable or too large now: the details still show
        return {"width": None, "height": None}
    return {"width": size[0], "height": size[1]}


def _check_page(k: int, offset: int) -> None:
    if not 1 <= k <= MAX_RESULTS:
        raise fail(400, f"k must be between 1 and {MAX_RESULTS}")
    if offset < 0:
        raise fail(400, "offset must not be negative")
    if k + offset > MAX_RESULTS:
        raise fail(400, f"k + offset must not exceed {MAX_RESULTS}")


def create_app(
    lib: Library,
    *,
    token: str | None = None,
    bind_host: str = "127.0.0.1",
    allow_hosts: tuple[str, ...] | list[str] = (),
    max_upload_mb: float = 20,
    thumbnails: Path | None = None,
) -> FastAPI:
    """The app serving ``lib``; ``token`` guards /api, ``bind_host``/``allow_hosts`` the Host check."""
    served = Served(lib, ThumbCache(thumbnails or cache_folder(lib.path)))
    auth = TokenAuth(token)
    max_upload = int(max_upload_mb * (1 << 20))
    app = FastAPI(
        title="clipdex",
        summary="Search your own images by text or by image.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(
        Guard, hosts=HostPolicy(bind_host, allow_hosts), auth=auth, max_upload_bytes=max_upload
    )
    app.state.served = served

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 400)

    @app.exception_handler(ClipdexError)
    async def library_error(request: Request, exc: ClipdexError) -> JSONResponse:
        return JSONResponse({"error": str(exc).splitlines()[0]}, 503)

    @app.get("/api/search", tags=["search"])
    def search_text(
        q: str = Query("", description="Text query."),
        k: int = Query(20, description="Results per page (1-1000)."),
        offset: int = Query(0, description="Results to skip; k + offset <= 1000."),
        target: str = Query("images", description="images or texts."),
        not_: list[str] = Query([], alias="not", description="Texts to steer away from (repeatable)."),
        weights: list[float] = Query([], description="One weight per term: q, then each `not`."),
        under: list[str] = Query([], description="Only images under these folders (repeatable)."),
        after: str | None = Query(None, description="Taken at or after (ISO 8601)."),
        before: str | None = Query(None, description="Taken before (ISO 8601)."),
        min_score: float | None = Query(None, description="Only results scoring at least this."),
        captioned: bool | None = Query(None, description="Only images with (true) or without captions."),
    ) -> dict:
        """Text -> images (or texts): `q` minus the `not` texts, with optional filters."""
        _check_page(k, offset)
        if not q.strip():
            raise fail(400, "empty query: give q=TEXT")
        query = QueryOptions.parse(q, not_, weights, under, after, before, min_score, captioned)
        return served.search(query, k, offset, target)

    @app.post("/api/search", tags=["search"])
    async def search_image(request: Request) -> dict:
        """Image -> images (or texts): multipart form with an ``image`` file and optional k, offset,
        target fields."""
        try:
            form = await request.form(max_files=1, max_fields=100)
        except UploadTooLarge:
            raise fail(413, "upload too large") from None
        except Exception as e:  # malformed multipart
            raise fail(400, f"cannot read the form: {e}") from None
        try:
            k = int(form.get("k") or 20)
            offset = int(form.get("offset") or 0)
        except ValueError:
            raise fail(400, "k and offset must be integers") from None
        _check_page(k, offset)
        target = str(form.get("target") or "images")
        try:
            weights = [float(w) for w in form.getlist("weights")]
            min_score = float(form["min_score"]) if form.get("min_score") else None
        except ValueError:
            raise fail(400, "weights and min_score must be numbers") from None
        captioned = {"": None, "true": True, "false": False}.get(str(form.get("captioned") or "").lower())
        query = QueryOptions.parse(
            str(form.get("q") or ""), [str(n) for n in form.getlist("not")], weights,
            [str(u) for u in form.getlist("under")], str(form.get("after") or ""),
            str(form.get("before") or ""), min_score, captioned,
        )  # fmt: skip
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise fail(400, "no image: send a multipart 'image' file")
        with tempfile.TemporaryDirectory(prefix="clipdex-upload-") as tmp:
            file = Path(tmp) / "query"
            await run_in_threadpool(_save_upload, upload.file, file, max_upload)
            await upload.close()
            return await run_in_threadpool(served.search, query, k, offset, target, file)

    @app.get("/api/items/{item_id:int}", tags=["items"])
    def item(item_id: int) -> dict:
        """Path, modality, size, mtime, width/height, linked captions."""
        return served.item(item_id)

    @app.get("/api/items/{item_id:int}/similar", tags=["items"])
    def similar(item_id: int, k: int = Query(20, description="Results (1-1000), the item first.")) -> dict:
        """More like this, from the stored vector (no re-encoding); the item itself first."""
        _check_page(k, 0)
        return served.similar(item_id, k)

    @app.get("/api/items/{item_id:int}/thumbnail", tags=["items"])
    def thumbnail(item_id: int, request: Request) -> Response:
        """JPEG, longest side <= 256 px, EXIF orientation applied."""
        data, key = served.thumbnail(item_id)
        etag = f'"{key}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/api/items/{item_id:int}/file", tags=["items"])
    def original(item_id: int) -> FileResponse:
        """The original image file (only by id; 404 when it changed or is gone)."""
        path = served.original(item_id)
        return FileResponse(os.fsdecode(path), headers={"Cache-Control": "private, no-cache"})

    @app.get("/api/items/{item_id:int}/explain", tags=["items"])
    def explain(
        item_id: int,
        request: Request,
        q: str = Query("", description="Text to explain."),
    ) -> Response:
        """PNG: the image with a heat map of the regions that raise its similarity to `q`
        (occlusion sensitivity, as `clipdex explain`); the score in the `X-Clipdex-Score` header."""
        data, score, etag = served.explain(item_id, q, request.headers.get("if-none-match"))
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if score is not None:
            headers["X-Clipdex-Score"] = repr(score)
        if data is None:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/png", headers=headers)

    @app.get("/api/info", tags=["library"])
    def info() -> dict:
        """What `clipdex info --json` prints."""
        return served.info()

    @app.post("/api/login", tags=["library"])
    def login(body: Login) -> JSONResponse:
        """Trade the token for an HttpOnly, SameSite=Strict session cookie (used by the page)."""
        if not auth.token_ok(body.token):
            raise fail(401, "wrong token")
        response = JSONResponse({"ok": True})
        if auth.token:
            response.set_cookie(COOKIE, auth.session, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _save_upload(src, dest: Path, limit: int) -> None:
    """Copy the spooled upload to ``dest`` (the decoder reads files), refusing more than ``limit``."""
    written = 0
    with open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise fail(413, "upload too large")
            out.write(chunk)
