"""/api/info, /api/login and the page at /."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from clipdex.serve.routes import served
from clipdex.serve.security import COOKIE
from clipdex.serve.state import fail

STATIC = Path(str(resources.files("clipdex.serve") / "static"))

router = APIRouter(tags=["library"])


class Login(BaseModel):
    token: str


@router.get("/api/info")
def info(request: Request) -> dict:
    """What `clipdex info --json` prints."""
    return served(request).info()


@router.post("/api/login")
def login(body: Login, request: Request) -> JSONResponse:
    """Trade the token for an HttpOnly, SameSite=Strict session cookie (used by the page)."""
    auth = request.app.state.auth
    if not auth.token_ok(body.token):
        raise fail(401, "wrong token")
    response = JSONResponse({"ok": True})
    if auth.token:
        response.set_cookie(COOKIE, auth.session, httponly=True, samesite="strict", path="/")
    return response


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
