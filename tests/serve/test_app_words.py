"""Words over HTTP: `words` and `by` on /api/search, the lines and boxes of /api/items/{id}."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.corehelp import ok
from helpers.textpics import require_cjk_font, text_picture

from clipdex.library import Library


@pytest.fixture(scope="module")
def ocr_library(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    require_cjk_font()
    root = tmp_path_factory.mktemp("serve-ocr")
    text_picture(root / "pics" / "sign.png", ["北京西站 出口"], seed=1)
    text_picture(root / "pics" / "bill.png", ["INVOICE 4471"], seed=2)
    text_picture(root / "pics" / "plain.png", [], seed=3)
    ok("--library", root / "lib", "index", root / "pics", "--model", tiny_model_dir, "--ocr", "--quiet")
    return root / "lib"


@pytest.fixture
def library(ocr_library: Path) -> Path:
    return ocr_library


def test_words_filter_and_ranking_equal_library_search(client, library):
    body = client.get("/api/search", params=[("q", "a sign"), ("words", "西站")]).json()
    assert [Path(r["path"]).name for r in body["results"]] == ["sign.png"] and body["total"] == 1
    assert "西站" in body["results"][0]["ocr"]
    for by in ("meaning", "words", "both"):
        got = client.get("/api/search", params={"q": "invoice", "by": by, "k": 10}).json()["results"]
        with Library.open(library) as lib:
            want = lib.search(text="invoice", by=by, k=10)
        assert [r["id"] for r in got] == [h.id for h in want]
        assert [r["score"] for r in got] == pytest.approx([h.score for h in want], abs=1e-5)
    alone = client.get("/api/search", params={"words": "invoice"}).json()["results"]
    assert [Path(r["path"]).name for r in alone] == ["bill.png"]


def test_item_details_have_the_lines_and_boxes(client, library):
    hit = client.get("/api/search", params={"q": "x", "words": "invoice"}).json()["results"][0]
    item = client.get(f"/api/items/{hit['id']}").json()
    assert item["ocr"].replace(" ", "") == "INVOICE4471"
    (line,) = item["lines"]
    assert len(line["box"]) == 4 and all(0 <= v <= 1 for p in line["box"] for v in p)
    assert line["confidence"] > 0.8
    plain = client.get("/api/search", params={"q": "x", "words": "plain"}).json()["results"][0]
    assert "lines" not in client.get(f"/api/items/{plain['id']}").json()


@pytest.mark.parametrize("params", [{"q": "x", "words": "(西站"}, {"q": "x", "by": "loudness"},
                                    {"q": "x", "words": "!!"}])  # fmt: skip
def test_bad_words_or_by_are_400(client, library, params):
    res = client.get("/api/search", params=params)
    assert res.status_code == 400 and res.json()["error"]
