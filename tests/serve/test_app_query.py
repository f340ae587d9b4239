"""Composed queries and filters over HTTP: the same answers as `Library.search` with the same terms."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.corehelp import make_images, ok

from clipdex import Filter
from clipdex.library import Library

BASE = "http://127.0.0.1:8765"


@pytest.fixture
def library(tmp_path: Path, tiny_model_dir: Path) -> Path:
    pics = tmp_path / "pics"
    make_images(pics / "a", [f"a{i}.png" for i in range(5)])
    make_images(pics / "b", [f"b{i}.png" for i in range(5)])
    (pics / "a" / "a1.txt").write_text("a caption of a1\n", encoding="utf-8")
    lib = tmp_path / "lib"
    ok("--library", lib, "index", pics, "--model", tiny_model_dir, "--quiet")
    return lib


def _ids(results: list[dict]) -> list[int]:
    return [r["id"] for r in results]


def test_not_terms_and_weights_equal_library_search(client, library):
    params = [("q", "red bicycle"), ("not", "blue sea"), ("not", "a dog"), ("k", "10")]
    got = client.get("/api/search", params=params).json()["results"]
    weighted = params + [("weights", "1"), ("weights", "0.5"), ("weights", "2")]
    got_w = client.get("/api/search", params=weighted).json()["results"]
    with Library.open(library) as lib:
        want = lib.search(text="red bicycle", not_text=["blue sea", "a dog"], k=10)
        want_w = lib.search(text="red bicycle", not_text=["blue sea", "a dog"], weights=[1, 0.5, 2], k=10)
    assert _ids(got) == [h.id for h in want]
    assert [r["score"] for r in got] == pytest.approx([h.score for h in want], abs=1e-5)
    assert _ids(got_w) == [h.id for h in want_w]
    assert _ids(got_w) != _ids(got) or [r["score"] for r in got_w] != [r["score"] for r in got]


def test_filters_over_http_keep_only_matches(client, library):
    under = str(library.parent / "pics" / "b")
    body = client.get("/api/search", params={"q": "red", "under": under, "k": 20}).json()
    assert body["total"] == 5 and len(body["results"]) == 5
    assert all(Path(r["path"]).parent.name == "b" for r in body["results"])
    with Library.open(library) as lib:
        want = lib.search(text="red", filter=Filter(under=[under]), k=20)
    assert _ids(body["results"]) == [h.id for h in want]
    captioned = client.get("/api/search", params={"q": "red", "captioned": "true"}).json()
    assert [Path(r["path"]).name for r in captioned["results"]] == ["a1.png"] and captioned["total"] == 1
    # a date range no photo falls into, and a score nothing reaches: empty, not an error
    future = client.get("/api/search", params={"q": "red", "after": "2999-01-01"}).json()
    assert future["results"] == [] and future["total"] == 0
    top = client.get("/api/search", params={"q": "red", "k": 3}).json()["results"]
    cut = client.get("/api/search", params={"q": "red", "min_score": top[1]["score"]}).json()
    assert _ids(cut["results"]) == _ids(top[:2]) and cut["total"] == 2


def test_upload_composed_with_text_and_filters(client, library):
    pics = library.parent / "pics"
    data = (pics / "a" / "a3.png").read_bytes()
    form = {"q": "red bicycle", "not": "blue sea", "under": str(pics / "a"), "k": "10"}
    r = client.post("/api/search", files={"image": ("q.png", data, "image/png")}, data=form)
    assert r.status_code == 200, r.text
    with Library.open(library) as lib:
        want = lib.search(
            text="red bicycle", image=pics / "a" / "a3.png", not_text="blue sea",
            filter=Filter(under=[pics / "a"]), k=10,
        )  # fmt: skip
    assert _ids(r.json()["results"]) == [h.id for h in want]


@pytest.mark.parametrize(
    "params",
    [
        {"q": "x", "after": "yesterday"},
        {"q": "x", "not": ""},
        {"q": "x", "weights": "-1"},
        {"q": "x", "weights": ["1", "2"]},
        {"q": "x", "min_score": "high"},
        {"q": "x", "not": "x"},  # the terms cancel out
    ],
)
def test_bad_query_parameters_are_400(client, params):
    r = client.get("/api/search", params=params)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}


def test_a_filtered_search_uses_the_model_another_writer_switched_to(client, library, tiny_model_dir2):
    under = str(library.parent / "pics" / "b")
    params = {"q": "red bicycle", "under": under, "k": 5}
    before = client.get("/api/search", params=params).json()  # the first model is loaded now
    ok("--library", library, "use-model", tiny_model_dir2, "--quiet")  # another Library: a writer
    after = client.get("/api/search", params=params).json()
    assert str(tiny_model_dir2) in after["model"] and after["model"] != before["model"]
    with Library.open(library) as lib:
        want = lib.search(text="red bicycle", filter=Filter(under=[under]), k=5)
    assert _ids(after["results"]) == [h.id for h in want]
    assert [r["score"] for r in after["results"]] == pytest.approx([h.score for h in want], abs=1e-5)
    assert [r["score"] for r in after["results"]] != pytest.approx([r["score"] for r in before["results"]])
