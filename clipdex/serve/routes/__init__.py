"""The HTTP API's routes, one module per resource: search, items, library (info, login, page)."""

from __future__ import annotations

from fastapi import Request

from clipdex.serve.state import Served


def served(request: Request) -> Served:
    """The app's shared state (`create_app` puts it on ``app.state``)."""
    return request.app.state.served
