"""`clipdex serve` as a user meets it: a real server, a second process writing, a real browser."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from helpers.corehelp import make_images, ok

from clipdex.cli.serve import _bind
from clipdex.library import Library
from clipdex.serve.app import create_app


def clipdex_process(*args: object) -> None:
    """Run the CLI in a separate process (a second writer next to the serving one)."""
    argv = [sys.executable, "-m", "clipdex.cli.main", *map(str, args)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_other_processes_writes_appear_without_restart(tmp_path, tiny_model_dir, tiny_model_dir2):
    pics, more = tmp_path / "pics", tmp_path / "more"
    make_images(pics, [f"a{i}.png" for i in range(4)])
    make_images(more, [f"b{i}.png" for i in range(3)], seed=7)
    lib_dir = tmp_path / "lib"
    ok("--library", lib_dir, "index", pics, "--model", tiny_model_dir, "--quiet")
    lib = Library.open(lib_dir)
    with TestClient(create_app(lib, thumbnails=tmp_path / "t"), base_url="http://localhost") as c:
        first = c.get("/api/search", params={"q": "x", "k": 50}).json()
        assert first["total"] == 4
        clipdex_process("--library", lib_dir, "index", pics, more, "--quiet")
        body = c.get("/api/search", params={"q": "x", "k": 50}).json()
        assert body["total"] == 7
        names = {Path(r["path"]).name for r in body["results"]}
        assert names == {f"a{i}.png" for i in range(4)} | {f"b{i}.png" for i in range(3)}
        new_id = next(r["id"] for r in body["results"] if r["path"].endswith("b1.png"))
        sim = c.get(f"/api/items/{new_id}/similar", params={"k": 3}).json()["results"]
        assert sim[0]["id"] == new_id
        # a model change in another process: the server loads the new model
        clipdex_process("--library", lib_dir, "use-model", tiny_model_dir2, "--quiet")
        after = c.get("/api/search", params={"q": "a red bicycle", "k": 7}).json()
        assert str(tiny_model_dir2) in after["model"]
        with Library.open(lib_dir) as fresh:  # a new process-like reader with the new model
            want = [(h.id, h.score) for h in fresh.search(text="a red bicycle", k=7)]
        got = [(r["id"], r["score"]) for r in after["results"]]
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
    lib.close()


@contextmanager
def live_server(app, servers: list | None = None):
    """uvicorn in a thread on a free loopback port; yields the base URL (and appends the
    uvicorn.Server to `servers`, for tests that look at its connections)."""
    import uvicorn

    # The listening socket comes from `clipdex serve`'s own _bind, so these tests see the socket
    # options users get (a bare socket.socket() here had proto 0 and hid the Nagle stall).
    sock = _bind("127.0.0.1", 0, OSError)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    if servers is not None:
        servers.append(server)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def served(tmp_path, tiny_model_dir):
    pics = tmp_path / "pics"
    make_images(pics, [f"pic{i}.png" for i in range(6)] + ["sub/pic6.png", "sub/pic7.png"])
    (pics / "pic0.txt").write_text("the first picture\n", encoding="utf-8")
    lib_dir = tmp_path / "lib"
    ok("--library", lib_dir, "index", pics, "--model", tiny_model_dir, "--quiet")
    lib = Library.open(lib_dir)
    with live_server(create_app(lib, thumbnails=tmp_path / "t")) as url:
        yield url, pics
    lib.close()


def test_raw_dot_dot_paths_never_leave_the_static_folder(served):
    """Literal ``..`` segments, sent as-is (an HTTP client would normalise them away)."""
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    for path in ("/static/../../etc/passwd", "/static/../../../../../../etc/passwd",
                 "/static/..%2f..%2f..%2fetc%2fpasswd", "/api/items/../../etc/passwd",
                 "/static/%2e%2e/%2e%2e/etc/passwd", "/static//etc/passwd"):  # fmt: skip
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 404), (path, answer[:200])
        assert b"root:" not in answer


def _timed_gets(conn: http.client.HTTPConnection, path: str) -> float:
    """One GET on `conn`, body read to the end; seconds."""
    start = time.perf_counter()
    conn.request("GET", path)
    answer = conn.getresponse()
    body = answer.read()
    took = time.perf_counter() - start
    assert answer.status == 200 and body, (answer.status, body[:200])
    return took


def test_a_kept_alive_connection_answers_as_fast_as_fresh_ones(tmp_path, tiny_model_dir):
    """Issue 16: accepted connections kept Nagle's algorithm (the listening socket had proto 0, and
    asyncio sets TCP_NODELAY only when proto is IPPROTO_TCP). uvicorn writes the headers and the
    body as two segments; on a kept-alive connection the body waited for the client's delayed ACK,
    ~40 ms per response. Fresh connections hide it (the ACK of the handshake is still pending), so
    they are the baseline: a ratio, which holds on a slow or loaded machine where absolute times
    do not."""
    pics = tmp_path / "pics"
    make_images(pics, ["a.png", "b.png"])
    lib_dir = tmp_path / "lib"
    ok("--library", lib_dir, "index", pics, "--model", tiny_model_dir, "--quiet")
    servers: list = []
    with (
        Library.open(lib_dir) as lib,
        live_server(create_app(lib, thumbnails=tmp_path / "t"), servers) as url,
    ):
        port = int(url.rsplit(":", 1)[1])
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            _timed_gets(kept, "/api/info")  # warm-up: connect, first-request costs
            # the server's side of the kept-alive connection: the option itself, not only its effect
            (conn,) = servers[0].server_state.connections
            accepted = conn.transport.get_extra_info("socket")
            nodelay = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            # interleaved, so load changes on a shared machine hit both sides alike
            on_kept, on_fresh = [], []
            for _ in range(20):
                on_kept.append(_timed_gets(kept, "/api/info"))
                fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    on_fresh.append(_timed_gets(fresh, "/api/info"))
                finally:
                    fresh.close()
        finally:
            kept.close()
    kept_p50, fresh_p50 = statistics.median(on_kept), statistics.median(on_fresh)
    assert kept_p50 <= 1.5 * fresh_p50 + 0.003, (
        f"kept-alive p50 {kept_p50 * 1e3:.1f} ms, fresh {fresh_p50 * 1e3:.1f} ms"
    )
    assert nodelay, "the accepted connection has no TCP_NODELAY"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_listening_socket_says_tcp_for_both_families(host):
    """The IPv6 branch of _bind too (the live test above only binds IPv4): proto 0 there would
    bring the 40 ms stall back for `--host ::1`."""
    try:
        sock = _bind(host, 0, OSError)
    except OSError as e:  # a machine without IPv6
        pytest.skip(f"cannot bind {host}: {e}")
    with sock:
        assert sock.proto == socket.IPPROTO_TCP


def chromium() -> str | None:
    for candidate in (os.environ.get("CLIPDEX_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def need_browser():
    """(sync_playwright, chromium path), or a skip (a failure with CLIPDEX_REQUIRE_BROWSER=1)."""
    required = os.environ.get("CLIPDEX_REQUIRE_BROWSER", "") not in ("", "0")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    exe = chromium()
    if sync_playwright is None or exe is None:
        reason = "browser test needs playwright and Debian's chromium (apt install chromium)"
        if required:
            pytest.fail(reason + " (CLIPDEX_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    return sync_playwright, exe


@contextmanager
def browser_page(browser: tuple) -> Iterator[tuple]:
    """A 1200x800 page in headless chromium (``browser`` from `need_browser`) and the list its
    script errors go to."""
    sync_playwright, exe = browser
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": 1200, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, errors
        chromium.close()


def test_the_page_in_a_real_browser(served, tmp_path):
    browser = need_browser()
    url, pics = served
    all_rendered = "els => els.length > 0 && els.every(e => e.complete && e.naturalWidth > 0)"
    with browser_page(browser) as (page, errors):
        page.goto(url)
        page.wait_for_function("document.getElementById('footer').textContent.includes('8 images')")
        # "/" focuses the search box; a text query fills the grid with rendered thumbnails
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "q"
        page.keyboard.type("a colourful picture")
        page.keyboard.press("Enter")
        page.wait_for_url("**/?q=a+colourful+picture")
        page.wait_for_function(f"({all_rendered})([...document.querySelectorAll('#grid img')])")
        assert page.locator("#grid .hit").count() == 8
        assert "8 of 8" in page.locator("#status").inner_text()
        # open a hit with the keyboard: arrows move, Enter opens, the large view shows the original
        page.locator("#grid .hit").first.focus()
        page.keyboard.press("ArrowRight")
        second = page.locator("#grid .hit").nth(1)
        name = second.locator(".name").inner_text()
        page.keyboard.press("Enter")
        page.wait_for_selector("#viewer[open]")
        page.wait_for_function("document.getElementById('viewer-img').naturalWidth > 0")
        assert str(next(pics.rglob(name))) in page.locator("#viewer-meta").inner_text()
        page.screenshot(path=str(tmp_path / "viewer.png"))
        # "similar": the item itself first, with score 1
        page.click("#similar-btn")
        page.wait_for_url("**/?similar=*")
        page.wait_for_function(f"({all_rendered})([...document.querySelectorAll('#grid img')])")
        first = page.locator("#grid .hit").first
        assert first.locator(".name").inner_text() == name
        assert first.locator(".score").inner_text() == "1.000"
        # an image query through the file input finds that image first
        page.set_input_files("#image-input", str(pics / "pic5.png"))
        page.wait_for_function(
            "(() => { const n = document.querySelector('#grid .hit .name');"
            " return n && n.textContent === 'pic5.png'; })()"
        )
        # the URL holds the query: a shared link opens with it, and back/forward work
        page.goto(url + "/?q=the+first+picture")
        assert page.input_value("#q") == "the first picture"
        page.wait_for_function(f"({all_rendered})([...document.querySelectorAll('#grid img')])")
        page.click("input#t-texts + label", force=True)
        page.wait_for_url("**/?q=the+first+picture&target=texts")
        page.wait_for_selector("#grid .hit.text")
        assert page.locator("#grid .hit.text .quote").first.inner_text() == "the first picture"
        page.go_back()
        page.wait_for_url("**/?q=the+first+picture")
        page.wait_for_selector("#grid .hit.image")
        # a folder filter: only pictures under it, kept in the URL (reload keeps it)
        sub = str(pics / "sub")
        page.click("#filters summary")
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/api/search" in r.url else None)
        page.fill("#f-under", sub)
        page.press("#f-under", "Enter")
        page.wait_for_url("**/?q=the+first+picture&under=*")
        page.wait_for_function("document.getElementById('status').textContent.includes('2 of 2')")
        assert parse_qs(urlsplit(page.url).query) == {"q": ["the first picture"], "under": [sub]}
        page.reload()
        assert page.input_value("#f-under") == sub
        page.wait_for_function(f"({all_rendered})([...document.querySelectorAll('#grid img')])")
        shown = page.evaluate("results.map(r => r.path)")
        assert sorted(Path(p).name for p in shown) == ["pic6.png", "pic7.png"]
        assert all(p.startswith(sub + os.sep) for p in shown)
        assert len(asked) == 2 and all(parse_qs(urlsplit(a).query)["under"] == [sub] for a in asked)
        assert page.locator("#filter-count").inner_text() == " (1)"
        # the large view explains a hit: the heat map for the text query, as large as the picture
        page.locator("#grid .hit").first.click()
        page.wait_for_selector("#viewer[open]")
        page.click("#explain-btn")
        page.wait_for_function(
            "(() => { const i = document.getElementById('explain-img');"
            " return !i.hidden && i.complete && i.naturalWidth > 0; })()"
        )
        assert page.evaluate("document.getElementById('explain-img').naturalWidth") == 64
        assert "the first picture" in page.get_attribute("#explain-img", "alt")
        assert page.get_attribute("#explain-btn", "aria-pressed") == "true"
        page.wait_for_function("document.getElementById('explain-caption').textContent.includes('score')")
        page.screenshot(path=str(tmp_path / "explain.png"))
        page.keyboard.press("Escape")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        page.emulate_media(color_scheme="dark")
        dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert dark == "rgb(20, 20, 22)", dark  # the dark theme follows the system
        page.set_viewport_size({"width": 390, "height": 800})  # a phone: the grid reflows
        page.screenshot(path=str(tmp_path / "page-dark-narrow.png"), full_page=True)
        assert not errors, errors
    print(f"screenshots: {tmp_path / 'page.png'} {tmp_path / 'viewer.png'} {tmp_path / 'explain.png'}")


def test_the_token_prompt_in_a_real_browser(tmp_path, tiny_model_dir):
    sync_playwright, exe = need_browser()
    pics = tmp_path / "pics"
    make_images(pics, ["one.png", "two.png"])
    ok("--library", tmp_path / "lib", "index", pics, "--model", tiny_model_dir, "--quiet")
    lib = Library.open(tmp_path / "lib")
    with live_server(create_app(lib, token="s3cret", thumbnails=tmp_path / "t")) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url + "/?q=anything")
            page.wait_for_selector("#login[open]")
            page.fill("#token", "wrong")
            page.click("#login-form button")
            page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
            page.fill("#token", "s3cret")
            page.click("#login-form button")
            page.wait_for_function(
                "[...document.querySelectorAll('#grid img')].filter(i => i.naturalWidth > 0).length == 2"
            )
            cookies = {c["name"]: c for c in page.context.cookies()}
            assert (
                cookies["clipdex_session"]["httpOnly"] and cookies["clipdex_session"]["sameSite"] == "Strict"
            )
            assert page.evaluate("document.cookie") == ""  # not readable by scripts
            browser.close()
    lib.close()
