"""`serve --watch`: the watcher beside the app; /api/info says what it follows and its generation
moves with each batch, so the page can offer "N new pictures"."""

from __future__ import annotations

from fastapi.testclient import TestClient
from helpers.corehelp import assert_one_error_line, make_images, ok, run
from helpers.watchhelp import wait_for

from clipdex.library import Library
from clipdex.serve.app import create_app
from clipdex.serve.following import Following


def test_new_pictures_reach_the_served_library(tmp_path, tiny_model_dir):
    photos, lib_dir = tmp_path / "photos", tmp_path / "lib"
    make_images(photos, ["a.png", "b.png"])
    ok("--library", lib_dir, "index", photos, "--model", tiny_model_dir, "--quiet")
    lib = Library.open(lib_dir)
    reports: list[str] = []
    following = Following(lambda: Library.open(lib_dir), [photos], reports.append, debounce=0.3)
    following.start()
    app = create_app(lib, thumbnails=tmp_path / "thumbs", watching=[str(photos)])
    try:
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            first = client.get("/api/info").json()
            assert first["watching"] == [str(photos)] and first["images"] == 2
            make_images(photos / "new", ["c.png", "d.png", "e.png"], seed=5)
            info = wait_for(
                lambda: (i := client.get("/api/info").json())["images"] == 5 and i, what="the batch"
            )
            assert info["generation"] > first["generation"]
            hits = client.get("/api/search", params={"q": "anything", "k": 10}).json()["results"]
            assert {h["path"] for h in hits} >= {str(photos / "new" / n) for n in ("c.png", "d.png", "e.png")}
            page = client.get("/").text + client.get("/static/app.js").text
            assert 'id="fresh"' in page and "new pictures" in page
    finally:
        following.stop()
        lib.close()
    assert not reports


def test_serve_watch_of_a_missing_folder_exits_1(tmp_path, tiny_model_dir):
    photos, lib_dir = tmp_path / "photos", tmp_path / "lib"
    make_images(photos, ["a.png"])
    ok("--library", lib_dir, "index", photos, "--model", tiny_model_dir, "--quiet")
    result = run("--library", lib_dir, "serve", "--port", "0", "--watch", tmp_path / "nope")
    assert_one_error_line(result, "folder not found")
