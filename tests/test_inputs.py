"""Input files: non-regular files refused before opening; the readers round-trip any text (hypothesis)."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from corehelp import assert_one_error_line, make_images, ok, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipdex.errors import ClipdexError
from clipdex.index.vector_files import read_metadata
from clipdex.retrieval.decode import DecodeError, open_image
from clipdex.retrieval.pairs import read_pairs
from clipdex.textfiles import read_jsonl, read_lines, read_texts


@contextmanager
def fifo(path: Path) -> Iterator[Path]:
    """A named pipe; should the code under test block opening it, a writer turns up to unblock it
    (so a regression fails its assertions instead of hanging the suite)."""
    os.mkfifo(path)
    stop = threading.Event()

    def unblock() -> None:
        while not stop.wait(2.0):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # no reader waiting: nothing blocked

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()


@pytest.fixture
def small_lib(tiny_model_dir, tmp_path) -> Path:
    make_images(tmp_path / "imgs", ["a.png", "b.png"])
    ok("--library", tmp_path / "lib", "index", tmp_path / "imgs", "--model", tiny_model_dir)
    return tmp_path / "lib"


def test_a_fifo_is_refused_everywhere_a_path_comes_in(small_lib, tmp_path):
    with fifo(tmp_path / "pipe.png") as pipe:
        res = run("--library", small_lib, "search", "--image", pipe)
        assert_one_error_line(res, "query image", "pipe.png", "not a regular file")
        with pytest.raises(DecodeError, match="not a regular file"):
            open_image(pipe)
    with fifo(tmp_path / "texts.txt") as pipe:
        assert_one_error_line(
            run("--library", small_lib, "add-texts", pipe), "texts.txt", "not a regular file"
        )
    with fifo(tmp_path / "pairs.csv") as pipe:
        with pytest.raises(ClipdexError, match="pairs file .*pairs.csv is not a regular file"):
            read_pairs(pipe)
    np.save(tmp_path / "v.npy", np.ones((1, 64), np.float32))
    with fifo(tmp_path / "meta.csv") as pipe:
        with pytest.raises(ClipdexError, match="metadata file .*meta.csv is not a regular file"):
            read_metadata(pipe)
        res = run("--library", small_lib, "import-embeddings", tmp_path / "v.npy", pipe)
        assert res.exit_code in (1, 2) and "meta.csv" in res.stderr and "Traceback" not in res.stderr
    with fifo(tmp_path / "vecs.npy") as pipe:
        (tmp_path / "m.csv").write_text("path\n/x.jpg\n")
        res = run("--library", small_lib, "import-embeddings", pipe, tmp_path / "m.csv")
        assert res.exit_code in (1, 2) and "vecs.npy" in res.stderr and "Traceback" not in res.stderr
    res = run("--library", small_lib, "search", "--image", tmp_path)
    assert_one_error_line(res, "query image", "is a folder")


# ---- readers: any text the standard writers write comes back (hypothesis) ----------------------
# Texts as add-texts stores them: stripped, non-empty; any characters but NUL and surrogates,
# including U+2028, U+2029, \x85, \x0c and \r inside (str.splitlines would split on those).
TRICKY = st.sampled_from(["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\r", '"', ",", "\t"])
CHARS = st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), TRICKY)
TEXT = st.text(CHARS, min_size=1, max_size=30).map(str.strip).filter(bool)
ONE_LINE = TEXT.filter(lambda t: "\n" not in t and "\r" not in t)
TEXTS = st.lists(TEXT, min_size=1, max_size=8)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(texts=TEXTS, tsv=st.booleans())
def test_csv_and_tsv_round_trip(tmp_path_factory, texts, tsv):
    path = tmp_path_factory.mktemp("csv") / ("t.tsv" if tsv else "t.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t" if tsv else ",")
        w.writerow(["id", "text"])
        w.writerows([[n, t] for n, t in enumerate(texts)])
    assert read_texts(path) == texts


@SETTINGS
@given(texts=TEXTS)
def test_jsonl_round_trips(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("jsonl") / "t.jsonl"
    for ascii_only in (True, False):
        path.write_text(
            "".join(json.dumps({"text": t}, ensure_ascii=ascii_only) + "\n" for t in texts), "utf-8"
        )
        assert read_texts(path) == texts
        assert [r["text"] for r in read_jsonl(path)] == texts


@SETTINGS
@given(texts=st.lists(ONE_LINE, min_size=1, max_size=8), crlf=st.booleans())
def test_txt_round_trips(tmp_path_factory, texts, crlf):
    path = tmp_path_factory.mktemp("txt") / "t.txt"
    with open(path, "w", encoding="utf-8", newline="\r\n" if crlf else "\n") as f:
        f.write("\n".join(texts) + "\n")
    assert read_texts(path) == texts
    assert read_lines(path) == texts


@SETTINGS
@given(captions=st.lists(TEXT, min_size=1, max_size=5))
def test_pairs_round_trip(tmp_path_factory, captions):
    folder = tmp_path_factory.mktemp("pairs")
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["image", "caption"])
    w.writerows([[f"img{n}.png", c] for n, c in enumerate(captions)])
    (folder / "p.csv").write_text(buf.getvalue(), encoding="utf-8", newline="")
    pairs, empty = read_pairs(folder / "p.csv")
    assert empty == 0 and [p.caption for p in pairs] == captions


@settings(max_examples=25, deadline=None)
@given(query=TEXT)
def test_query_strings_reach_the_encoder_unchanged(query):
    """A text query (any characters) is passed on verbatim: CLI words joined with spaces."""
    from click.testing import CliRunner

    from clipdex.cli import library_cmds
    from clipdex.cli.common import State

    seen = []

    class Lib:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return None

        def search(self, text=None, **kw):
            seen.append(text)
            return []

    class FakeState(State):
        def open(self, create=False, **kw):
            return Lib()

    res = CliRunner().invoke(library_cmds.search, ["--", *query.split(" ")], obj=FakeState(None, False))
    assert res.exit_code == 0, res.output
    assert seen == [" ".join(query.split(" ")).strip()]
