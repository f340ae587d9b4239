"""The server and videos: moments in results, frame thumbnails, details, `media`, Range requests."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from helpers.corehelp import make_images, ok
from helpers.videos import make_video, scene, three_scenes
from PIL import Image


@pytest.fixture
def library(tmp_path, tiny_model_dir) -> Path:
    root = tmp_path / "media"
    three_scenes(root / "three.mp4", (0, 1, 2))
    make_images(root, ["photo.png"], size=600)
    make_video(root / "long.mp4", [(scene(3), 2.0)])
    ok("--library", tmp_path / "lib", "index", root, "--model", tiny_model_dir, "--quiet")
    return tmp_path / "lib"


def test_moments_thumbnails_details_and_media(client):
    res = client.get("/api/search", params={"q": "a white wall", "k": 10, "media": "videos"}).json()[
        "results"
    ]
    assert res and all(r["modality"] == "video" and r["thumbnail"].endswith("/thumbnail") for r in res)
    white = next(r for r in res if r["path"].endswith("three.mp4") and r["t"] == 4.0)
    thumb = client.get(white["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    pixels = Image.open(io.BytesIO(thumb.content)).convert("L")
    import numpy as np

    assert np.asarray(pixels).mean() > 200  # the frame at 4 s: white
    item = client.get(f"/api/items/{white['id']}").json()
    assert (item["modality"], item["t"], item["file"]) == ("video", 4.0, f"/api/items/{white['id']}/file")
    photos = client.get("/api/search", params={"q": "x", "media": "photos"}).json()["results"]
    assert [r["modality"] for r in photos] == ["image"]
    assert client.get("/api/search", params={"q": "x", "media": "films"}).status_code == 400


def test_file_answers_range_requests(client):
    res = client.get("/api/search", params={"q": "x", "k": 20}).json()["results"]
    video = next(r for r in res if r["modality"] == "video")
    for r in (
        video,
        next(r for r in res if r["modality"] == "image"),
    ):
        whole = client.get(f"/api/items/{r['id']}/file")
        assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
        part = client.get(f"/api/items/{r['id']}/file", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
        tail = client.get(f"/api/items/{r['id']}/file", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == whole.content[-10:]
    assert client.get(f"/api/items/{video['id']}/file").headers["content-type"] == "video/mp4"
