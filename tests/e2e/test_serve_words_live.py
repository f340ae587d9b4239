"""The words filter and the text read in a picture, in a real browser (Debian's chromium)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from helpers.corehelp import ok
from helpers.textpics import require_cjk_font, text_picture

from clipdex.library import Library
from clipdex.serve.app import create_app
from tests.e2e.test_serve_live import browser_page, live_server, need_browser


def test_words_round_trip_and_the_viewer_shows_the_text_and_its_boxes(tmp_path, tiny_model_dir):
    require_cjk_font()
    browser = need_browser()
    pics = tmp_path / "pics"
    text_picture(pics / "sign.png", ["欢迎来到北京西站"], seed=1)
    text_picture(pics / "bill.png", ["INVOICE 4471", "TOTAL 88"], seed=2)
    text_picture(pics / "plain.png", [], seed=3)
    ok("--library", tmp_path / "lib", "index", pics, "--model", tiny_model_dir, "--ocr", "--quiet")
    lib = Library.open(tmp_path / "lib")
    with (
        live_server(create_app(lib, thumbnails=tmp_path / "t")) as url,
        browser_page(browser) as (page, errors),
    ):
        page.goto(url + "/?words=%E8%A5%BF%E7%AB%99")  # /?words=西站, no text query
        page.wait_for_function("document.getElementById('status').textContent.includes('1 of 1')")
        assert page.input_value("#f-words") == "西站"
        assert [Path(r).name for r in page.evaluate("results.map(r => r.path)")] == ["sign.png"]
        # typed in the filters with a text query: kept in the URL
        page.fill("#q", "a picture")
        page.fill("#f-words", "invoice")
        page.press("#f-words", "Enter")
        page.wait_for_url("**/?q=a+picture&words=invoice")
        assert parse_qs(urlsplit(page.url).query) == {"q": ["a picture"], "words": ["invoice"]}
        page.wait_for_function("document.getElementById('status').textContent.includes('1 of 1')")
        page.locator("#grid .hit").first.click()
        page.wait_for_selector("#viewer[open]")
        page.wait_for_function("document.querySelectorAll('#viewer-ocr li').length === 2")
        assert page.locator("#ocr-title").is_visible()
        assert page.locator("#viewer-ocr mark").first.inner_text().lower() == "invoice"
        assert page.locator("#ocr-boxes polygon").count() == 2
        assert page.locator("#ocr-boxes polygon.match").count() == 1
        # the boxes lie over the picture as shown
        page.wait_for_function("document.getElementById('viewer-img').naturalWidth > 0")
        img = page.locator("#viewer-img").bounding_box()
        svg = page.locator("#ocr-boxes").bounding_box()
        assert abs(img["width"] - svg["width"]) < 2 and abs(img["height"] - svg["height"]) < 2
        page.screenshot(path=str(tmp_path / "viewer-words.png"))
        assert not errors, errors
    lib.close()
