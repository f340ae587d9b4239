"""`clipdex serve`'s JSON API against the real app, a real library and the tiny model."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.corehelp import blocks_image, brute_force, make_images, ok, stored
from PIL import Image

from clipdex.library import Library
from clipdex.serve.app import create_app

BASE = "http://127.0.0.1:8765"


@pytest.fixture
def library(tmp_path: Path, tiny_model_dir: Path) -> Path:
    pics = tmp_path / "pics"
    make_images(pics, [f"p{i}.png" for i in range(6)] + ["big.jpg"])
    blocks_image(99, size=800).save(pics / "big.jpg")
    (pics / "p0.txt").write_text("a caption of p0\n", encoding="utf-8")
    lib = tmp_path / "lib"
    ok("--library", lib, "index", pics, "--model", tiny_model_dir, "--quiet")
    texts = tmp_path / "t.txt"
    texts.write_text("red bicycle\nblue sea\n", encoding="utf-8")
    ok("--library", lib, "add-texts", texts, "--quiet")
    return lib


def image_ids(library: Path) -> dict[str, int]:
    ids, _ = stored(library, "image")
    with Library.open(library) as lib:
        return {Path(lib.store.items.record(int(i))["path"].decode()).name: int(i) for i in ids}


def png_bytes(seed: int, size: int = 64) -> bytes:
    out = io.BytesIO()
    blocks_image(seed, size).save(out, "PNG")
    return out.getvalue()


def test_text_search_matches_library_search(client, library):
    r = client.get("/api/search", params={"q": "red bicycle", "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"results", "took_ms", "model", "total"}
    assert body["total"] == 7 and "local-dir:" in body["model"]
    with Library.open(library) as lib:
        want = [h.to_dict() for h in lib.search(text="red bicycle", k=4)]
    got = body["results"]
    # the server encodes, then searches by vector: scores agree to float32 rounding
    assert [{k: v for k, v in g.items() if k not in ("thumbnail", "score")} for g in got] == [
        {k: v for k, v in w.items() if k != "score"} for w in want
    ]
    assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-6)
    assert all(g["thumbnail"] == f"/api/items/{g['id']}/thumbnail" for g in got)
    # paging: offset continues the same ranking
    page2 = client.get("/api/search", params={"q": "red bicycle", "k": 2, "offset": 2}).json()["results"]
    assert [p["id"] for p in page2] == [g["id"] for g in got[2:4]]
    assert [p["rank"] for p in page2] == [3, 4]


def test_text_search_texts_target(client):
    body = client.get("/api/search", params={"q": "red bicycle", "target": "texts", "k": 10}).json()
    assert body["total"] == 3
    assert {r["text"] for r in body["results"]} == {"red bicycle", "blue sea", "a caption of p0"}
    assert all(r["modality"] == "text" and "thumbnail" not in r for r in body["results"])


def test_image_upload_search_finds_the_same_image(client, library):
    ids = image_ids(library)
    data = (library.parent / "pics" / "p3.png").read_bytes()
    r = client.post("/api/search", files={"image": ("q.png", data, "image/png")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    first = r.json()["results"][0]
    assert first["id"] == ids["p3.png"] and first["score"] == pytest.approx(1.0, abs=1e-4)
    r = client.post("/api/search", files={"image": ("q.png", data)}, data={"target": "texts", "k": "2"})
    assert r.status_code == 200 and all(x["modality"] == "text" for x in r.json()["results"])


def test_similar_puts_the_item_first_then_brute_force_order(client, library):
    ids = image_ids(library)
    item = ids["p2.png"]
    body = client.get(f"/api/items/{item}/similar", params={"k": 5}).json()
    res = body["results"]
    assert res[0]["id"] == item and res[0]["score"] == pytest.approx(1.0, abs=1e-5)
    sids, svecs = stored(library, "image")
    query = svecs[list(sids).index(item)]
    want = [i for i, _ in brute_force(sids, svecs, query, 6) if i != item][:4]
    assert [r["id"] for r in res[1:]] == want
    assert [r["rank"] for r in res] == [1, 2, 3, 4, 5]


def test_item_details(client, library):
    ids = image_ids(library)
    d = client.get(f"/api/items/{ids['p0.png']}").json()
    path = library.parent / "pics" / "p0.png"
    assert d["path"] == str(path) and d["modality"] == "image"
    assert d["size"] == path.stat().st_size and d["mtime"] == pytest.approx(path.stat().st_mtime)
    assert (d["width"], d["height"]) == (64, 64)
    assert [c["text"] for c in d["captions"]] == ["a caption of p0"]
    caption = d["captions"][0]["id"]
    t = client.get(f"/api/items/{caption}").json()
    assert t["modality"] == "text" and t["text"] == "a caption of p0" and t["image_id"] == ids["p0.png"]


def test_thumbnails_decode_small_with_cache_headers(client, library, tmp_path):
    ids = image_ids(library)
    for name, side in (("big.jpg", 256), ("p1.png", 64)):
        r = client.get(f"/api/items/{ids[name]}/thumbnail")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        img = Image.open(io.BytesIO(r.content))
        img.load()
        assert max(img.size) == side
        assert "max-age" in r.headers["cache-control"]
        again = client.get(f"/api/items/{ids[name]}/thumbnail", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
    assert len(list((tmp_path / "thumbs").glob("*.jpg"))) == 2


def test_thumbnail_applies_exif_orientation(client, library, tmp_path):
    # a 200x100 image stored with "rotate 90" in EXIF shows as 100x200 -> thumbnail 128x256? no: 100x200
    pics = library.parent / "pics"
    img = blocks_image(5, 64).resize((200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(pics / "rot.jpg", exif=exif)
    ok("--library", library, "index", pics, "--quiet")
    item = image_ids(library)["rot.jpg"]
    r = client.get(f"/api/items/{item}/thumbnail")
    assert Image.open(io.BytesIO(r.content)).size == (100, 200)
    d = client.get(f"/api/items/{item}").json()
    assert (d["width"], d["height"]) == (100, 200)


def test_original_file_only_while_unchanged(client, library):
    ids = image_ids(library)
    path = library.parent / "pics" / "p4.png"
    r = client.get(f"/api/items/{ids['p4.png']}/file")
    assert r.status_code == 200 and r.content == path.read_bytes()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    r = client.get(f"/api/items/{ids['p4.png']}/file")
    assert r.status_code == 404 and "changed" in r.json()["error"]
    path.unlink()
    assert client.get(f"/api/items/{ids['p4.png']}/file").status_code == 404
    assert client.get(f"/api/items/{ids['p4.png']}/thumbnail").status_code == 404


def test_info_equals_cli_info_json(client, library):
    client.get("/api/info")  # a reader may first refresh a stale FAISS file, changing its size
    cli = json.loads(ok("--library", library, "info", "--json").stdout)
    body = client.get("/api/info").json()
    assert body == cli and body["images"] == 7 and body["texts"] == 3


@pytest.mark.parametrize(
    "method,url,kwargs,status",
    [
        ("get", "/api/search", {}, 400),
        ("get", "/api/search?q=%20%20", {}, 400),
        ("get", "/api/search?q=x&k=0", {}, 400),
        ("get", "/api/search?q=x&k=1001", {}, 400),
        ("get", "/api/search?q=x&k=abc", {}, 400),
        ("get", "/api/search?q=x&offset=-1", {}, 400),
        ("get", "/api/search?q=x&k=600&offset=401", {}, 400),
        ("get", "/api/search?q=x&target=videos", {}, 400),
        ("get", "/api/items/999999", {}, 404),
        ("get", "/api/items/99999999999999999999999", {}, 404),
        ("get", "/api/items/abc", {}, 404),
        ("get", "/api/items/999999/similar", {}, 404),
        ("get", "/api/items/1/similar?k=0", {}, 400),
        ("get", "/api/items/999999/thumbnail", {}, 404),
        ("get", "/api/items/999999/file", {}, 404),
        ("post", "/api/search", {"data": {"k": "3"}}, 400),
        ("post", "/api/search", {"files": {"image": ("x.png", b"not an image at all")}}, 400),
        ("post", "/api/search", {"files": {"image": ("x.png", b"")}}, 400),
        ("post", "/api/search", {"files": {"image": ("x.png", b"\x89PNG")}, "data": {"k": "0"}}, 400),
        (
            "post",
            "/api/search",
            {"content": b"garbage", "headers": {"content-type": "multipart/form-data"}},
            400,
        ),
        ("post", "/api/login", {"json": {}}, 400),
        ("get", "/nope", {}, 404),
    ],
)
def test_bad_requests_get_json_4xx(client, method, url, kwargs, status):
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]


def test_text_item_thumbnail_and_file_are_404(client):
    texts = client.get("/api/search", params={"q": "x", "target": "texts"}).json()["results"]
    tid = texts[0]["id"]
    assert client.get(f"/api/items/{tid}/thumbnail").status_code == 404
    assert client.get(f"/api/items/{tid}/file").status_code == 404


def test_upload_over_the_limit_is_413(library, tmp_path):
    lib = Library.open(library)
    app = create_app(lib, max_upload_mb=0.1, thumbnails=tmp_path / "t")
    with TestClient(app, base_url=BASE) as c:
        big = os.urandom(300_000)
        r = c.post("/api/search", files={"image": ("x.png", big)})
        assert r.status_code == 413 and r.json() == {"error": "upload too large"}

        def chunks():  # no Content-Length: caught while streaming
            for _ in range(40):
                yield b"x" * 10_000

        r = c.post(
            "/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"}
        )
        assert r.status_code == 413
        ok_small = c.post("/api/search", files={"image": ("q.png", png_bytes(1))})
        assert ok_small.status_code == 200
    lib.close()


def test_upload_with_too_many_pixels_is_400(client, monkeypatch):
    from clipdex.retrieval import decode

    monkeypatch.setattr(decode, "MAX_PIXELS", 1000)
    r = client.post("/api/search", files={"image": ("q.png", png_bytes(2, size=64))})
    assert r.status_code == 400 and "too large" in r.json()["error"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/items/..%2F..%2Fetc%2Fpasswd",
        "/api/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/items/..%252F..%252Fetc%252Fpasswd",
        "/api/items/1/..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%252F..%252Fetc%252Fpasswd",
        "/static/%252e%252e/%252e%252e/etc/passwd",
    ],
)
def test_path_traversal_is_impossible(client, url):
    r = client.get(url)
    assert r.status_code in (400, 404), (url, r.status_code)
    assert b"root:" not in r.content


def test_token_bearer_and_login_cookie(library, tmp_path):
    lib = Library.open(library)
    with TestClient(create_app(lib, token="s3cret", thumbnails=tmp_path / "t"), base_url=BASE) as c:
        for url in ("/api/info", "/api/search?q=x", "/api/items/1", "/api/items/1/thumbnail"):
            r = c.get(url)
            assert r.status_code == 401 and r.json() == {"error": "missing or wrong token"}
        assert c.get("/api/info", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/").status_code == 200  # the page loads, then asks for the token
        assert c.get("/static/app.js").status_code == 200
        assert c.post("/api/login", json={"token": "wrong"}).status_code == 401
        assert c.get("/api/info", headers={"Cookie": "clipdex_session=forged"}).status_code == 401
        r = c.post("/api/login", json={"token": "s3cret"})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "s3cret" not in cookie
        assert c.get("/api/info").status_code == 200  # the client now sends the cookie
    lib.close()


@pytest.mark.parametrize(
    "bind,allow,host,status",
    [
        ("127.0.0.1", (), "127.0.0.1:8765", 200),
        ("127.0.0.1", (), "localhost:8765", 200),
        ("127.0.0.1", (), "[::1]:8765", 200),
        ("127.0.0.1", (), "evil.example:8765", 421),
        ("127.0.0.1", (), "localhost.evil.example", 421),
        ("127.0.0.1", (), "", 421),
        ("192.0.2.7", ("photos.lan",), "photos.lan:8765", 200),
        ("192.0.2.7", ("photos.lan",), "192.0.2.7:8765", 200),
        ("192.0.2.7", ("photos.lan",), "other.lan", 421),
        ("0.0.0.0", (), "10.1.2.3:8765", 200),
        ("0.0.0.0", (), "evil.example", 421),
    ],
)
def test_host_check(library, tmp_path, bind, allow, host, status):
    lib = Library.open(library)
    app = create_app(lib, bind_host=bind, allow_hosts=allow, thumbnails=tmp_path / "t")
    with TestClient(app, base_url=BASE) as c:
        for url in ("/api/info", "/"):
            r = c.get(url, headers={"host": host})
            assert r.status_code == status, (host, url, r.text)
            if status == 421:
                assert "error" in r.json()
    lib.close()


def test_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>clipdex</title>" in page.text
    for asset in ("/static/app.css", "/static/app.js"):
        assert client.get(asset).status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/items/{item_id}", "/api/info", "/api/login"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_empty_library_answers_empty_results(tmp_path, tiny_model_dir):
    pics = tmp_path / "empty"
    pics.mkdir()
    ok("--library", tmp_path / "lib", "index", pics, "--model", tiny_model_dir, "--quiet")
    lib = Library.open(tmp_path / "lib")
    with TestClient(create_app(lib, thumbnails=tmp_path / "t"), base_url=BASE) as c:
        body = c.get("/api/search", params={"q": "anything"}).json()
        assert body["results"] == [] and body["total"] == 0
        upload = c.post("/api/search", files={"image": ("q.png", png_bytes(3))}).json()
        assert upload["results"] == [] and upload["total"] == 0
        assert c.post("/api/search", files={"image": ("q.png", b"nope")}).status_code == 400
    lib.close()


def test_concurrent_text_queries_get_the_same_answers(client):
    """Concurrent queries share forward passes (serve.batching); each gets its own right answer."""
    from concurrent.futures import ThreadPoolExecutor

    queries = [f"query {i} " + "word " * i for i in range(8)]

    def ask(q):
        return client.get("/api/search", params={"q": q, "k": 7}).json()["results"]

    alone = [ask(q) for q in queries]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, queries))
    for a, b in zip(alone, together):
        assert [r["id"] for r in a] == [r["id"] for r in b]
        assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-5)
