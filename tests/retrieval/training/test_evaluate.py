"""`clipdex eval` / `clipdex.evaluate`: every figure equals a brute-force computation from open_clip's
own encode_* outputs, for each model compared."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.corehelp import json_lines, make_images, ok, run
from helpers.metrics import brute_force
from PIL import Image

import clipdex


@pytest.fixture()
def pairs_csv(tmp_path: Path) -> Path:
    names = [f"img{i}.png" for i in range(10)]
    make_images(tmp_path / "photos", names, seed=4)
    rows = [(f"photos/{n}", f"picture number {i}") for i, n in enumerate(names)]
    rows += [("photos/img3.png", "a second caption of three"), ("photos/img7.png", "picture number 2")]
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([("image", "caption"), *rows])
    return path


def _open_clip_truth(model_dir: Path, pairs_csv: Path) -> dict[str, float]:
    """Embeddings straight from open_clip, grouped by hand: the reference."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    model.eval()
    rows = list(csv.DictReader(open(pairs_csv)))
    images = sorted({r["image"] for r in rows})
    texts = sorted({r["caption"] for r in rows})
    relevant = np.zeros((len(texts), len(images)), bool)
    for r in rows:
        relevant[texts.index(r["caption"]), images.index(r["image"])] = True
    with torch.no_grad():
        pix = torch.stack([preprocess(Image.open(pairs_csv.parent / p).convert("RGB")) for p in images])
        img = torch.nn.functional.normalize(model.encode_image(pix), dim=-1).numpy()
        txt = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1).numpy()
    return brute_force(img, txt, relevant)


def test_evaluate_matches_open_clip_brute_force_for_each_model(
    pairs_csv, tiny_model_dir, tiny_model_dir2
) -> None:
    results = clipdex.evaluate(pairs_csv, [str(tiny_model_dir), f"local-dir:{tiny_model_dir2}"], device="cpu")
    assert [r["model"] for r in results] == [
        f"local-dir:{tiny_model_dir.resolve()}",
        f"local-dir:{tiny_model_dir2.resolve()}",
    ]
    for res, model_dir in zip(results, (tiny_model_dir, tiny_model_dir2), strict=True):
        assert res.pop("pairs") == 12
        res.pop("model")
        assert res == pytest.approx(_open_clip_truth(model_dir, pairs_csv), abs=1e-6)
    assert results[0] != results[1]  # two different models really were compared


def test_cli_eval_json_table_and_library_default(
    pairs_csv, tiny_model_dir, tiny_model_dir2, tmp_path
) -> None:
    lib = tmp_path / "lib"
    ok("--library", lib, "index", pairs_csv.parent / "photos", "--model", tiny_model_dir, "--quiet")
    out = json_lines(ok("--library", lib, "eval", pairs_csv, "--json").stdout)
    assert [r["model"] for r in out] == [f"local-dir:{tiny_model_dir.resolve()}"]  # the library's model
    keys = ["model", "pairs", "t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10",
            "t2i_median_rank", "i2t_median_rank", "t2i_map", "i2t_map"]  # fmt: skip
    assert list(out[0]) == keys
    two = ("--model", tiny_model_dir, "--model", tiny_model_dir2)
    both = json_lines(ok("eval", pairs_csv, *two, "--json").stdout)
    assert [r["model"] for r in both] == [f"local-dir:{d.resolve()}" for d in two[1::2]]
    assert both[0] == out[0]
    table = ok("eval", pairs_csv, *two).stdout.splitlines()
    assert table[0].split() == [tiny_model_dir.name, tiny_model_dir2.name]
    row = next(line for line in table if line.startswith("text->image mAP")).split()
    assert [float(x) for x in row[-2:]] == pytest.approx([both[0]["t2i_map"], both[1]["t2i_map"]], abs=6e-4)


def test_eval_skips_an_unreadable_image_and_names_it(pairs_csv, tiny_model_dir) -> None:
    (pairs_csv.parent / "photos" / "img5.png").write_bytes(b"not a png")
    res = ok("eval", pairs_csv, "--model", tiny_model_dir, "--json")
    assert json_lines(res.stdout)[0]["pairs"] == 11
    assert "img5.png" in res.stderr
    missing = run("eval", pairs_csv.parent / "nope.csv")
    assert missing.exit_code == 2
