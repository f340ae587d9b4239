"""A name that is not UTF-8 through every command that prints hits, in every output mode.

`search`, `similar` (by path and by id, image and caption items) and `duplicates` print through
one output module: `--paths`/`-0` write the exact bytes, `--json` is valid UTF-8 with U+FFFD in
``path`` and the bytes in ``path_b64``, the table shows U+FFFD. None of them escapes (``\\xe9``).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from helpers.corehelp import blocks_image, json_lines, ok, path_ids

MODES = ["table", "--json", "--paths", "-0"]


@pytest.fixture(scope="module")
def odd_library(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, str]:
    """A library holding ``café.png`` spelled in Latin-1 (a copy of ``plain.png``) with a caption."""
    root = tmp_path_factory.mktemp("odd-names")
    imgs, lib = root / "imgs", root / "lib"
    imgs.mkdir()
    blocks_image(5).save(imgs / "plain.png")
    raw = os.path.join(os.fsencode(imgs), b"caf\xe9.png")
    with open(raw, "wb") as f:  # the same picture: a duplicate group of two
        shutil.copyfileobj(open(imgs / "plain.png", "rb"), f)
    with open(raw[:-4] + b".txt", "w") as f:
        f.write("a caption of the odd one")
    blocks_image(9).save(imgs / "other.png")
    ok("--library", lib, "index", imgs, "--model", tiny_model_dir, "--quiet")
    return lib, raw, str(imgs) + "/caf\ufffd.png"


def _check(stdout: bytes, mode: str, raw: bytes, shown: str) -> None:
    """The odd name appears in ``stdout`` as ``mode`` says, and never escaped."""
    assert b"\\xe9" not in stdout
    if mode == "--paths":
        assert raw in stdout.split(b"\n")
    elif mode == "-0":
        names = stdout.split(b"\0")
        assert raw in names and all(os.path.exists(n) for n in names if n)
    elif mode == "--json":
        lines = json_lines(stdout.decode("utf-8"))  # valid UTF-8
        items = [item for line in lines for item in line.get("items", [line])]
        odd = [d for d in items if d.get("path") == shown]
        assert odd and all(base64.b64decode(d["path_b64"]) == raw for d in odd)
        assert all("path_b64" not in d for d in items if d.get("path") != shown)  # only when needed
    else:
        assert shown in stdout.decode("utf-8")


@pytest.mark.parametrize("mode", MODES)
def test_search_prints_the_exact_name(odd_library, mode):
    lib, raw, shown = odd_library
    flags = [] if mode == "table" else [mode]
    res = ok("--library", lib, "search", "--image", raw, "-k", 3, *flags)
    _check(res.stdout_bytes, mode, raw, shown)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("by", ["path", "id"])
def test_similar_prints_the_exact_name(odd_library, mode, by):
    lib, raw, shown = odd_library
    item = raw if by == "path" else str(path_ids(lib)[raw])
    flags = [] if mode == "table" else [mode]
    res = ok("--library", lib, "similar", item, "-k", 3, *flags)
    _check(res.stdout_bytes, mode, raw, shown)
    if mode == "--json":  # the query item's own line comes first, with its bytes
        first = json_lines(res.stdout)[0]
        assert first["rank"] == 1 and first["path"] == shown and first["id"] == path_ids(lib)[raw]


@pytest.mark.parametrize("mode", MODES)
def test_similar_caption_item_prints_its_images_name(odd_library, mode):
    lib, raw, shown = odd_library
    caption = json_lines(ok("--library", lib, "search", "odd one", "--target", "texts", "--json").stdout)
    (cap,) = [c for c in caption if c["text"] == "a caption of the odd one"]
    flags = [] if mode == "table" else [mode]
    res = ok("--library", lib, "similar", str(cap["id"]), "-k", 1, *flags)
    _check(res.stdout_bytes, mode, raw, shown)


@pytest.mark.parametrize("mode", ["table", "--json"])
def test_duplicates_prints_the_exact_name(odd_library, mode):
    lib, raw, shown = odd_library
    flags = [] if mode == "table" else [mode]
    res = ok("--library", lib, "duplicates", *flags)
    _check(res.stdout_bytes, mode, raw, shown)


def test_serve_item_and_results_carry_the_exact_name(odd_library, tmp_path):
    from fastapi.testclient import TestClient

    from clipdex.library import Library
    from clipdex.serve.app import create_app

    lib_dir, raw, shown = odd_library
    odd_id = path_ids(lib_dir)[raw]
    with (
        Library.open(lib_dir) as lib,
        TestClient(
            create_app(lib, thumbnails=tmp_path / "thumbs"), base_url="http://127.0.0.1:8765"
        ) as client,
    ):
        item = client.get(f"/api/items/{odd_id}").json()
        assert item["path"] == shown and base64.b64decode(item["path_b64"]) == raw
        (cap_id,) = [c["id"] for c in item["captions"]]
        cap = client.get(f"/api/items/{cap_id}").json()  # a caption shows its image's name
        assert cap["path"] == shown and base64.b64decode(cap["path_b64"]) == raw
        hits = client.get("/api/search", params={"q": "odd", "k": 3}).json()["results"]
        odd = [h for h in hits if h["id"] == odd_id]
        assert odd and odd[0]["path"] == shown and base64.b64decode(odd[0]["path_b64"]) == raw
        assert client.get(f"/api/items/{odd_id}/file").content == open(raw, "rb").read()
