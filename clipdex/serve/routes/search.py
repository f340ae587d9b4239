"""/api/search: text -> images (or texts) by GET, image -> images (or texts) by POST."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from clipdex.serve.routes import served
from clipdex.serve.security import UploadTooLarge
from clipdex.serve.state import QueryOptions, check_page, fail

router = APIRouter(tags=["search"])


@router.get("/api/search")
def search_text(
    request: Request,
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
    words: list[str] = Query(
        [],
        description="Only items whose read text, caption or file name match "
        "(FTS5 syntax; repeatable: all must). Alone, also the query.",
    ),
    by: str | None = Query(
        None, description="meaning, words (BM25) or both (RRF); default: both in a library that reads text."
    ),
    media: str = Query("all", description="all, photos (no video moments) or videos (only them)."),
) -> dict:
    """Text -> images (or texts): `q` minus the `not` texts, with optional filters."""
    check_page(k, offset)
    words = [w for w in words if w.strip()]
    if not q.strip() and words:  # the words alone are the query too, ranked by them
        q, by = " ".join(words), by or "words"
    if not q.strip():
        raise fail(400, "empty query: give q=TEXT")
    query = QueryOptions.parse(q, not_, weights, under, after, before, min_score, captioned, words, by, media)
    return served(request).search(query, k, offset, target)


@router.post("/api/search")
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
    check_page(k, offset)
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
        str(form.get("before") or ""), min_score, captioned, [str(w) for w in form.getlist("words")],
        str(form.get("by")) if form.get("by") else None, str(form.get("media") or "all"),
    )  # fmt: skip
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise fail(400, "no image: send a multipart 'image' file")
    with tempfile.TemporaryDirectory(prefix="clipdex-upload-") as tmp:
        file = Path(tmp) / "query"
        await run_in_threadpool(_save_upload, upload.file, file, request.app.state.max_upload)
        await upload.close()
        return await run_in_threadpool(served(request).search, query, k, offset, target, file)


def _save_upload(src, dest: Path, limit: int) -> None:
    """Copy the spooled upload to ``dest`` (the decoder reads files), refusing more than ``limit``."""
    written = 0
    with open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise fail(413, "upload too large")
            out.write(chunk)
