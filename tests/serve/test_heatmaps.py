"""GET /api/items/{id}/explain: the heat map `clipdex explain` draws, as a PNG over HTTP."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import make_images, ok, stored
from PIL import Image

from clipdex.library import Library
from clipdex.retrieval.explain import open_for_explain, render

BASE = "http://127.0.0.1:8765"


@pytest.fixture
def library(tmp_path: Path, tiny_model_dir: Path) -> Path:
    pics = tmp_path / "pics"
    make_images(pics, ["p0.png", "p1.png", "p2.png"])
    lib = tmp_path / "lib"
    ok("--library", lib, "index", pics, "--model", tiny_model_dir, "--quiet")
    texts = tmp_path / "t.txt"
    texts.write_text("red bicycle\n", encoding="utf-8")
    ok("--library", lib, "add-texts", texts, "--quiet")
    return lib


def ids_by_name(library: Path, kind: str) -> dict[str, int]:
    ids, _ = stored(library, kind)
    with Library.open(library) as lib:
        recs = [lib.store.items.record(int(i)) for i in ids]
    return {(Path(r["path"].decode()).name if r["path"] else r["text"]): r["id"] for r in recs}


def test_explain_returns_the_heat_map_library_explain_draws(client, library):
    images = ids_by_name(library, "image")
    path = library.parent / "pics" / "p1.png"
    r = client.get(f"/api/items/{images['p1.png']}/explain", params={"q": "a red circle"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    got = Image.open(io.BytesIO(r.content))
    got.load()
    with Library.open(library) as lib:
        want = lib.explain(path, text="a red circle")
        hit = lib.search(text="a red circle", k=3)
    picture = open_for_explain(path)
    drawn = render(want, picture)  # what `clipdex explain --out` writes
    assert got.size == drawn.size == picture.size
    assert float(r.headers["x-clipdex-score"]) == pytest.approx(want.score, abs=1e-5)
    # the score is the one search reports for that image and text
    assert float(r.headers["x-clipdex-score"]) == pytest.approx(
        next(h.score for h in hit if h.id == images["p1.png"]), abs=1e-5
    )
    diff = np.abs(np.asarray(got.convert("RGB"), np.int16) - np.asarray(drawn, np.int16))
    assert diff.max() <= 2  # the same picture, up to float rounding in the batch
    # another text gives another heat map and score; the same request again is answered alike
    other = client.get(f"/api/items/{images['p1.png']}/explain", params={"q": "a blue square"})
    assert other.headers["x-clipdex-score"] != r.headers["x-clipdex-score"]
    again = client.get(f"/api/items/{images['p1.png']}/explain", params={"q": "a red circle"})
    assert again.content == r.content and again.headers["etag"] == r.headers["etag"]
    cached = client.get(
        f"/api/items/{images['p1.png']}/explain", params={"q": "a red circle"},
        headers={"If-None-Match": r.headers["etag"]},
    )  # fmt: skip
    assert cached.status_code == 304


def test_explain_errors_are_json(client, library):
    images = ids_by_name(library, "image")
    texts = ids_by_name(library, "text")
    pid = images["p0.png"]
    cases = [
        (f"/api/items/{pid}/explain", {}, 400),
        (f"/api/items/{pid}/explain", {"q": "   "}, 400),
        ("/api/items/987654/explain", {"q": "x"}, 404),
        ("/api/items/99999999999999999999/explain", {"q": "x"}, 404),
        (f"/api/items/{texts['red bicycle']}/explain", {"q": "x"}, 404),
    ]
    for url, params, status in cases:
        r = client.get(url, params=params)
        assert r.status_code == status, (url, params, r.text)
        assert r.headers["content-type"] == "application/json" and r.json()["error"]
    (library.parent / "pics" / "p0.png").unlink()
    r = client.get(f"/api/items/{pid}/explain", params={"q": "x"})
    assert r.status_code == 404 and "gone" in r.json()["error"]
    (library.parent / "pics" / "p2.png").write_bytes(b"not an image")
    r = client.get(f"/api/items/{images['p2.png']}/explain", params={"q": "x"})
    assert r.status_code == 404 and "cannot explain" in r.json()["error"]


def test_revalidating_a_heat_map_no_longer_kept_answers_304_without_computing_it(
    client, library, monkeypatch
):
    import clipdex.retrieval.explain as explain_module
    from clipdex.serve.heatmaps import HeatMaps

    made = []
    real = explain_module.explain
    monkeypatch.setattr(explain_module, "explain", lambda *a, **kw: made.append(1) or real(*a, **kw))
    served = client.app.state.served
    url = f"/api/items/{ids_by_name(library, 'image')['p1.png']}/explain"
    first = client.get(url, params={"q": "a red circle"})
    assert first.status_code == 200 and len(made) == 1
    etag = first.headers["etag"]
    kept = client.get(url, params={"q": "a red circle"}, headers={"If-None-Match": etag})
    assert kept.status_code == 304 and len(made) == 1
    assert kept.headers["x-clipdex-score"] == first.headers["x-clipdex-score"]  # still kept: score too
    served.heat_maps = HeatMaps(keep=16)  # the map has left the cache
    gone = client.get(url, params={"q": "a red circle"}, headers={"If-None-Match": etag})
    assert gone.status_code == 304 and gone.headers["etag"] == etag and len(made) == 1
    stale = client.get(url, params={"q": "a red circle"}, headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == first.content and len(made) == 2
