"""`clipdex serve`: the web page and JSON API over one loaded Library (FastAPI on uvicorn)."""
