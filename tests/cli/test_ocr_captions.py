"""The text read in pictures as captions: `finetune --captions-from ocr` and `eval --captions-from ocr`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.corehelp import assert_one_error_line, json_lines, ok, run
from helpers.textpics import require_cjk_font, text_picture

WORDS = ["RIVER", "CASTLE", "北京", "上海", "GARDEN", "TICKET", "MARKET", "广州", "BRIDGE", "HARBOR",
         "TEMPLE", "STATION", "深圳", "MUSEUM", "FOREST", "ISLAND", "南京", "CANYON", "VALLEY",
         "SUMMIT"]  # fmt: skip


@pytest.fixture(scope="module")
def ocr_lib(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    require_cjk_font()
    root = tmp_path_factory.mktemp("ocr-captions")
    for n, word in enumerate(WORDS):
        text_picture(root / "pics" / f"s{n:02d}.png", [f"{word} {n + 11}"], size=(360, 130), seed=n)
    text_picture(root / "pics" / "blank.png", [], size=(360, 130), seed=99)
    ok("--library", root / "lib", "index", root / "pics", "--model", tiny_model_dir, "--ocr", "--quiet")
    return root / "lib"


def test_finetune_on_the_text_read(ocr_lib, tmp_path):
    res = ok("--library", ocr_lib, "finetune", "--captions-from", "ocr", "--epochs", "2", "--batch-size", "8",
             "--lr", "1e-3", "--val-fraction", "0.2", "--test-fraction", "0.25", "--out", tmp_path / "m",
             "--json")  # fmt: skip
    out = json.loads(res.stdout)
    assert out["train_pairs"] + out["val_pairs"] + out["test_pairs"] == len(
        WORDS
    )  # the blank one has no text
    assert out["test_pairs"] >= 5 and out["report_split"] == "test"
    assert set(out["before"]) == set(out["after"]) and 0 <= out["after"]["t2i_r5"] <= 1


def test_eval_on_the_text_read_and_the_errors(ocr_lib, tiny_model_dir, tmp_path):
    (row,) = json_lines(ok("--library", ocr_lib, "eval", "--captions-from", "ocr", "--json").stdout)
    assert row["pairs"] == len(WORDS)
    assert run("--library", ocr_lib, "eval").exit_code == 2  # neither PAIRS nor --captions-from
    plain = tmp_path / "plain"
    text_picture(plain / "pics" / "x.png", ["HELLO"], size=(360, 130))
    ok("--library", plain / "lib", "index", plain / "pics", "--model", tiny_model_dir, "--quiet")
    assert_one_error_line(run("--library", plain / "lib", "finetune", "--captions-from", "ocr"), "--ocr")
