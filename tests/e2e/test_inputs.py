"""Input files: non-regular files (a FIFO) are refused before opening, by every command taking a path."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import assert_one_error_line, make_images, ok, run

from clipdex.errors import ClipdexError
from clipdex.inputs.embeddings import read_metadata
from clipdex.retrieval.decode import DecodeError, open_image
from clipdex.retrieval.training.pairs import read_pairs


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
