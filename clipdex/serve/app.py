"""The FastAPI app of `clipdex serve`: JSON API under /api, the page at /, its files under /static.

`create_app` puts the shared state (serve.state: the open Library and its locks) on the app and
mounts the routes (serve.routes, one module per resource); blocking work runs in the threadpool.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from clipdex.errors import ClipdexError
from clipdex.library import Library
from clipdex.serve.routes import items, library, search
from clipdex.serve.routes.library import STATIC
from clipdex.serve.security import Guard, HostPolicy, TokenAuth
from clipdex.serve.state import Served
from clipdex.serve.thumbs import ThumbCache, cache_folder


def create_app(
    lib: Library,
    *,
    token: str | None = None,
    bind_host: str = "127.0.0.1",
    allow_hosts: tuple[str, ...] | list[str] = (),
    max_upload_mb: float = 20,
    thumbnails: Path | None = None,
    watching: list[str] | None = None,
) -> FastAPI:
    """The app serving ``lib``; ``token`` guards /api, ``bind_host``/``allow_hosts`` the Host check;
    ``watching``: the folders a watcher beside it follows (`/api/info` says so, the page polls)."""
    served = Served(lib, ThumbCache(thumbnails or cache_folder(lib.path)), watching)
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
    app.state.auth = auth
    app.state.max_upload = max_upload

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

    for routes in (search, items, library):
        app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
