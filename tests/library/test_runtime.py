"""Query encoding by ONNX Runtime: graphs exported for the library's model, used by default, the
same results as torch, refused clearly when asked for and missing, and no torch at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import assert_one_error_line, json_lines, make_images, ok, run

from clipdex import Library
from clipdex.errors import ClipdexError, ModelError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("auto_runtime")


@pytest.fixture(scope="module")
def lib_dir(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    make_images(root / "pics", [f"p{i}.png" for i in range(12)], seed=5)
    (root / "pics" / "p3.txt").write_text("a caption to find")
    lib = root / "lib"
    ok("--library", lib, "index", root / "pics", "--model", tiny_model_dir, "--quiet")
    out = json_lines(ok("--library", lib, "model", "export-onnx", "--json").stdout)[0]
    assert Path(out["folder"]).parent == lib / "models" and out["precisions"] == ["fp32"]
    return lib


QUERIES = [
    dict(text="a red square"),
    dict(text=["blue", "green"], not_text="red"),
    dict(text="caption", target="texts"),
]


@pytest.mark.parametrize("query", QUERIES)
def test_onnx_queries_rank_as_torch_does(lib_dir, query):
    with Library.open(lib_dir) as auto, Library.open(lib_dir, runtime="torch") as torch_lib:
        assert auto.models.runtime_name.startswith("onnx") and torch_lib.models.runtime_name == "torch"
        got, want = auto.search(k=8, **query), torch_lib.search(k=8, **query)
    assert [h.id for h in got] == [h.id for h in want]
    assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-4)


def test_image_queries_too(lib_dir):
    picture = lib_dir.parent / "pics" / "p7.png"
    with Library.open(lib_dir) as auto, Library.open(lib_dir, runtime="torch") as torch_lib:
        got, want = auto.encode_images([picture]), torch_lib.encode_images([picture])
        assert float(got[0] @ want[0]) > 0.9999
        assert auto.search(image=picture, k=1)[0].path.endswith("p7.png")


def test_info_reports_the_runtime(lib_dir):
    assert json_lines(ok("--library", lib_dir, "info", "--json").stdout)[0]["runtime"].startswith("onnx (")
    assert "runtime:   torch" in ok("--library", lib_dir, "info", env={"CLIPDEX_RUNTIME": "torch"}).stdout


def test_runtime_onnx_without_graphs_is_one_clear_line(tiny_model_dir, tmp_path):
    make_images(tmp_path / "pics", ["a.png", "b.png"])
    ok("--library", tmp_path / "lib", "index", tmp_path / "pics", "--model", tiny_model_dir, "--quiet",
       "--runtime", "torch")  # fmt: skip
    assert_one_error_line(
        run("--library", tmp_path / "lib", "search", "x", "--runtime", "onnx"),
        "no ONNX graphs",
        "export-onnx",
    )
    with Library.open(tmp_path / "lib") as lib:  # auto without graphs: torch
        assert lib.models.runtime_name == "torch" and len(lib.search("x", k=2)) == 2
    with pytest.raises(ClipdexError, match="unknown runtime 'gpu'"):
        Library.open(tmp_path / "lib", runtime="gpu")
    with (
        Library.open(tmp_path / "lib", runtime="onnx") as lib,
        pytest.raises(ModelError, match="export-onnx"),
    ):
        lib.search("x")


def test_graphs_belong_to_one_model(lib_dir, tiny_model_dir2, tmp_path):
    import shutil

    copy = tmp_path / "lib"
    shutil.copytree(lib_dir, copy)
    ok("--library", copy, "use-model", tiny_model_dir2, "--quiet", "--runtime", "torch")
    with Library.open(copy) as lib:  # the old model's graphs are not this model's
        assert lib.models.runtime_name == "torch"
    report = json_lines(ok("--library", copy, "check", "--repair", "--json").stdout)[0]
    want = f"exported ONNX graphs for model local-dir:{tiny_model_dir2} (fp32)"
    assert report["healthy"] and report["repaired"] == [want]
    with Library.open(copy) as lib:
        assert lib.models.runtime_name.startswith("onnx")
    assert len(list((copy / "models").glob("onnx-*"))) == 2  # each model its own
    assert json_lines(ok("--library", copy, "check", "--repair", "--json").stdout)[0]["repaired"] == []


CHILD = """
import json, sys
for name in ("torch", "torchvision", "open_clip"):
    sys.modules[name] = None  # any import of them fails
from clipdex import Library
with Library.open(sys.argv[1]) as lib:
    hits = lib.search(text="a red square", k=5)
    print(json.dumps([h.id for h in hits]))
"""


def test_search_needs_no_torch_with_graphs(lib_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(lib_dir)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with Library.open(lib_dir, runtime="torch") as lib:
        assert json.loads(done.stdout) == [h.id for h in lib.search(text="a red square", k=5)]


CLI_CHILD = """
import sys
for name in ("torch", "torchvision", "open_clip"):
    sys.modules[name] = None
from clipdex.cli.main import cli
cli(["--library", sys.argv[1], sys.argv[2], *sys.argv[3:]])
"""


@pytest.mark.parametrize("command", [["search", "a red square", "-k", "3", "--json"], ["info", "--json"]])
def test_the_cli_searches_and_reports_without_torch(lib_dir, command):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    done = subprocess.run(
        [sys.executable, "-c", CLI_CHILD, str(lib_dir), *command], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json_lines(done.stdout)
    if command[0] == "search":
        with Library.open(lib_dir, runtime="torch") as lib:
            assert [r["id"] for r in rows] == [h.id for h in lib.search(text="a red square", k=3)]
    else:
        assert rows[0]["runtime"].startswith("onnx (")


def test_one_library_object_follows_its_own_export_and_model_change(
    tiny_model_dir, tiny_model_dir2, tmp_path
):
    make_images(tmp_path / "pics", ["a.png", "b.png", "c.png"])
    with Library.open(tmp_path / "lib", create=True, model=str(tiny_model_dir)) as lib:
        lib.index(tmp_path / "pics")  # the first write exports the graphs ...
        assert lib.query_runtime.startswith("onnx (")  # ... and queries use them at once
        first = lib.models.onnx().folder
        lib.use_model(str(tiny_model_dir2))  # the re-embedding exports the new model's
        assert lib.query_runtime.startswith("onnx (") and lib.models.onnx().folder != first
        assert len(lib.search("x", k=3)) == 3
