"""Writers encode through the runtime too: graphs exported on first use, int8 as the library's
recorded precision (measured on the user's pictures, refused when it changes too much), and a
model that cannot be exported remembered and encoded with torch."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.corehelp import assert_one_error_line, json_lines, make_images, ok, run, stored

from clipdex import Library
from clipdex.retrieval.onnx import export

pytestmark = pytest.mark.usefixtures("auto_runtime")


@pytest.fixture
def pics(tmp_path):
    make_images(tmp_path / "pics", [f"p{i:02}.png" for i in range(14)], seed=3)
    (tmp_path / "pics" / "p01.txt").write_text("a caption\n")
    return tmp_path / "pics"


def _torch_vectors(lib_dir, tiny_model_dir) -> dict[int, np.ndarray]:
    """The stored items re-encoded by torch (open_clip), by id."""
    from clipdex.retrieval.decode import open_image
    from clipdex.retrieval.encoders import TorchEncoder
    from clipdex.retrieval.models import load_model, resolve_spec

    enc = TorchEncoder(load_model(resolve_spec(str(tiny_model_dir)), "cpu"))
    with Library.open(lib_dir) as lib:
        rows = list(lib.store.items.iter("image"))
    vecs = enc.encode_pictures([open_image(p) for _, p, _ in rows])
    return {i: v for (i, _, _), v in zip(rows, vecs)}


def test_int8_is_the_libraries_precision_and_switching_it_re_embeds(pics, tiny_model_dir, tmp_path):
    lib = tmp_path / "lib"
    res = ok("--library", lib, "index", pics, "--model", tiny_model_dir, "--precision", "int8", "--json")
    assert json_lines(res.stdout)[0]["added"] == 14
    figures = [line for line in res.stderr.splitlines() if "int8 against fp32" in line]
    assert len(figures) == 1 and "on 14 of your pictures: top-10 overlap" in figures[0], res.stderr
    data = json_lines(ok("--library", lib, "info", "--json").stdout)[0]
    assert data["precision"] == "int8" and data["runtime"] == "onnx (CPUExecutionProvider, int8)"
    ref = _torch_vectors(lib, tiny_model_dir)
    ids, vecs = stored(lib, "image")
    cos = np.array([v @ ref[int(i)] for i, v in zip(ids, vecs)])
    assert cos.min() > 0.99 and cos.max() < 1 - 1e-7  # close to fp32, but not fp32's vectors
    assert len(json_lines(ok("--library", lib, "search", "a caption", "--json").stdout)) == 10

    # Another precision on a library that holds vectors is a re-embedding: refused without --reembed.
    assert_one_error_line(run("--library", lib, "index", pics, "--precision", "fp32"), "int8", "--reembed")
    torch_run = run("--library", lib, "index", pics, "--runtime", "torch")
    assert_one_error_line(torch_run, "int8", "--runtime torch")
    ok("--library", lib, "index", pics, "--precision", "fp32", "--reembed", "--quiet")
    assert json_lines(ok("--library", lib, "info", "--json").stdout)[0]["precision"] == "fp32"
    ids, vecs = stored(lib, "image")
    assert max(np.abs(v - ref[int(i)]).max() for i, v in zip(ids, vecs)) <= 1e-5


def test_int8_that_moves_the_neighbours_is_refused_unless_forced(pics, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MIN_INT8_OVERLAP", 1.01)  # no int8 can keep more than all of them
    lib = tmp_path / "lib"
    args = ("--library", lib, "index", pics, "--model", tiny_model_dir, "--precision", "int8")
    res = run(*args)
    last = res.stderr.strip().splitlines()[-1]
    assert res.exit_code == 1 and last.startswith("Error: int8 keeps only 100% of the top-10")
    assert "--force-int8" in last
    assert "top-10 overlap 1.000" in res.stderr  # the figures come first
    assert stored(lib, "image")[0].size == 0
    assert not list((lib / "models").glob("onnx-*"))  # nothing half-written
    ok(*args, "--force-int8", "--quiet")
    assert stored(lib, "image")[0].size == 14
    assert json_lines(ok("--library", lib, "info", "--json").stdout)[0]["precision"] == "int8"


def test_a_model_that_cannot_be_exported_is_encoded_with_torch_and_remembered(
    pics, tiny_model_dir, tmp_path, monkeypatch
):
    calls = []

    def refuse(lm, *args, **kwargs):
        calls.append(lm.spec)
        raise export.ExportError(f"model {lm.spec}: the image tower cannot be exported to ONNX: no op")

    monkeypatch.setattr(export, "export_model", refuse)
    lib = tmp_path / "lib"
    res = ok("--library", lib, "index", pics, "--model", tiny_model_dir, "--quiet")
    assert "cannot be exported to ONNX: no op; encoding with torch" in res.stderr and len(calls) == 1
    make_images(pics, ["new.png"], seed=9)
    res = ok("--library", lib, "index", pics, "--quiet")
    assert len(calls) == 1 and "ONNX" not in res.stderr  # remembered: not tried (nor said) again
    ref = _torch_vectors(lib, tiny_model_dir)
    ids, vecs = stored(lib, "image")
    assert max(np.abs(v - ref[int(i)]).max() for i, v in zip(ids, vecs)) <= 1e-5
    assert "no ONNX graphs" not in ok("--library", lib, "search", "x").stderr  # known: torch, quietly
    make_images(pics, ["newer.png"], seed=10)
    res = run("--library", lib, "index", pics, "--runtime", "onnx")  # asked for: tried again, and refused
    last = res.stderr.strip().splitlines()[-1]
    assert res.exit_code == 1 and last.endswith("cannot be exported to ONNX: no op")
    assert len(calls) == 2


def test_debug_names_what_encodes(pics, tiny_model_dir, tmp_path):
    lib = tmp_path / "lib"
    res = ok("--debug", "--library", lib, "index", pics, "--model", tiny_model_dir, "--quiet")
    assert "clipdex: debug: writes encode model local-dir:" in res.stderr
    assert "with onnx (CPUExecutionProvider, fp32)" in res.stderr
    res = ok("--debug", "--library", lib, "search", "x", "--runtime", "torch")
    assert "clipdex: debug: queries encode with torch" in res.stderr


def test_a_reader_without_graphs_says_so_once_and_repair_exports(pics, tiny_model_dir, tmp_path):
    lib = tmp_path / "lib"
    ok("--library", lib, "index", pics, "--model", tiny_model_dir, "--quiet", "--runtime", "torch")
    res = ok("--library", lib, "search", "x", "--image", pics / "p02.png")
    assert res.stderr.count("no ONNX graphs") == 1 and "check --repair" in res.stderr
    report = json_lines(ok("--library", lib, "check", "--repair", "--json").stdout)[0]
    assert report["repaired"] == [f"exported ONNX graphs for model local-dir:{tiny_model_dir} (fp32)"]
    assert ok("--library", lib, "search", "x").stderr == ""


def test_int8_agreement_counts_kept_neighbours():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    same = export.int8_agreement(v, v)
    assert same == {"n": 30, "k": 10, "overlap": 1.0, "mean_cosine": pytest.approx(1.0)}
    other = rng.normal(size=v.shape).astype(np.float32)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    assert export.int8_agreement(v, other)["overlap"] < 0.6
    assert export.int8_agreement(v[:4], v[:4])["k"] == 3
    assert export.int8_agreement(v[:1], other[:1])["overlap"] == 1.0
