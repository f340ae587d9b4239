"""/api/items/ID: an item's details, similar items, thumbnail, original file and heat map."""

from __future__ import annotations

import os

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from clipdex.serve.routes import served
from clipdex.serve.state import check_page

router = APIRouter(tags=["items"])


@router.get("/api/items/{item_id:int}")
def item(item_id: int, request: Request) -> dict:
    """Path, modality, size, mtime, width/height, linked captions."""
    return served(request).item(item_id)


@router.get("/api/items/{item_id:int}/similar")
def similar(
    item_id: int, request: Request, k: int = Query(20, description="Results (1-1000), the item first.")
) -> dict:
    """More like this, from the stored vector (no re-encoding); the item itself first."""
    check_page(k, 0)
    return served(request).similar(item_id, k)


@router.get("/api/items/{item_id:int}/thumbnail")
def thumbnail(item_id: int, request: Request) -> Response:
    """JPEG, longest side <= 256 px, EXIF orientation applied (a video's moment: its frame at t)."""
    data, key = served(request).thumbnail(item_id)
    etag = f'"{key}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/api/items/{item_id:int}/file")
def original(item_id: int, request: Request) -> FileResponse:
    """The original file, an image or a video (only by id; 404 when it changed or is gone).
    Answers HTTP Range requests (206 Partial Content), so a `<video>` seeks and large photos resume."""
    path = served(request).original(item_id)
    return FileResponse(os.fsdecode(path), headers={"Cache-Control": "private, no-cache"})


@router.get("/api/items/{item_id:int}/explain")
def explain(
    item_id: int,
    request: Request,
    q: str = Query("", description="Text to explain."),
) -> Response:
    """PNG: the image with a heat map of the regions that raise its similarity to `q`
    (occlusion sensitivity, as `clipdex explain`); the score in the `X-Clipdex-Score` header."""
    data, score, etag = served(request).explain(item_id, q, request.headers.get("if-none-match"))
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if score is not None:
        headers["X-Clipdex-Score"] = repr(score)
    if data is None:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/png", headers=headers)
