"""Near-duplicate groups against planted truth: real files through the model, and planted vectors."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import pytest
from helpers.corehelp import json_lines, ok, run
from PIL import Image

from clipdex import Library
from clipdex.index.faiss import neighbours

# With the tests' random-init tiny model every picture embeds close to every other (unrelated
# scenes: cosine 0.97-0.993, rotated copies up to ~0.996), while resized, re-encoded and slightly
# cropped copies stay at >= 0.999: this threshold separates them, and a grouping that joined
# unrelated or rotated pictures, or missed a copy, fails.
THRESHOLD = 0.998


def _scene(seed: int, size: int = 192) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)


def _plant(folder, bases=range(5)):
    """Per base scene: the original and three copies (the planted group), and a rotated copy
    (a planted non-duplicate); plus unrelated singletons. Returns the groups as sets of paths."""
    groups = []
    for b in bases:
        d = folder / f"s{b}"
        d.mkdir(parents=True)
        img = _scene(b)
        img.save(d / "original.png")
        img.resize((120, 120), Image.Resampling.LANCZOS).save(d / "small.png")
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=40)
        (d / "reencoded.jpg").write_bytes(buf.getvalue())
        img.crop((6, 6, 186, 186)).save(d / "cropped.png")
        img.rotate(90).save(d / "rotated.png")
        groups.append({str(d / n) for n in ("original.png", "small.png", "reencoded.jpg", "cropped.png")})
    for s in range(100, 104):
        _scene(s).save(folder / f"other{s}.png")
    return groups


def _expected_order(paths):
    """Best quality first: most pixels, then largest file (computed here from the files)."""

    def key(p):
        with Image.open(p) as im:
            w, h = im.size
        return (-(w * h), -os.path.getsize(p))

    return sorted(paths, key=key)


def test_planted_duplicate_groups(tmp_path, tiny_model_dir):
    pics = tmp_path / "pics"
    planted = _plant(pics)
    lib = tmp_path / "lib"
    ok("--library", lib, "index", pics, "--model", tiny_model_dir, "--quiet")
    res = ok("--library", lib, "duplicates", "--threshold", THRESHOLD, "--json")
    groups = [g["items"] for g in json_lines(res.stdout)]
    assert sorted(sorted(i["path"] for i in g) for g in groups) == sorted(sorted(g) for g in planted)
    for g in groups:
        assert [i["path"] for i in g] == _expected_order([i["path"] for i in g])
        assert g[0]["score"] == pytest.approx(1.0) and all(
            THRESHOLD - 0.01 < i["score"] <= 1 + 1e-5 for i in g
        )
        first = g[0]
        with Image.open(first["path"]) as im:
            assert (first["width"], first["height"]) == im.size
        assert first["size"] == os.path.getsize(first["path"])
    # --under keeps groups within the folders named; the human output names every copy
    res = ok(
        "--library",
        lib,
        "duplicates",
        "--threshold",
        THRESHOLD,
        "--under",
        pics / "s1",
        "--under",
        pics / "s3",
    )
    listed = {line.split()[-1] for line in res.stdout.splitlines() if line.startswith("  ")}
    assert listed == planted[1] | planted[3]
    assert "2 groups" in res.stderr
    # A lower threshold joins more: the rotated copies (and more) come in
    loose = json_lines(ok("--library", lib, "duplicates", "--threshold", "0.99", "--json").stdout)
    assert sum(len(g["items"]) for g in loose) > sum(len(g) for g in planted)
    assert run("--library", lib, "duplicates", "--threshold", "1.5").exit_code == 2


@pytest.mark.parametrize("exact_max", [neighbours.EXACT_MAX, 500])  # 500: the IVF k-NN path
def test_planted_vector_groups(tmp_path, tiny_model_dir, exact_max, monkeypatch):
    """5,000 unrelated vectors plus 40 planted groups of 2-6 noisy copies (cosine ~0.97-0.99)."""
    monkeypatch.setattr(neighbours, "EXACT_MAX", exact_max)
    rng = np.random.default_rng(11)
    vecs = [rng.standard_normal((5000, 64))]
    truth = []
    start = 5000
    for _ in range(40):
        size = int(rng.integers(2, 7))
        centre = rng.standard_normal(64)
        centre /= np.linalg.norm(centre)
        vecs.append(centre + 0.02 * rng.standard_normal((size, 64)))
        truth.append(set(range(start, start + size)))
        start += size
    x = np.vstack(vecs).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(x))  # planted copies scattered through the ids
    np.save(tmp_path / "v.npy", x[order])
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"])
        w.writerows([f"/photos/{'a' if r % 2 else 'b'}/img{r}.jpg"] for r in order)
    with Library.open(tmp_path / "lib", create=True, model=str(tiny_model_dir)) as lib:
        lib.import_embeddings(tmp_path / "v.npy", tmp_path / "m.csv")
        groups = lib.duplicates(threshold=0.9)
        found = sorted(sorted(int(item.path.split("img")[1][:-4]) for item in g) for g in groups)
        assert found == sorted(sorted(t) for t in truth)
        assert [len(g) for g in groups] == sorted((len(g) for g in groups), reverse=True)
        under_a = lib.duplicates(threshold=0.9, under="/photos/a")
        want = sorted(sorted(r for r in t if r % 2) for t in truth if sum(r % 2 for r in t) >= 2)
        assert sorted(sorted(int(i.path.split("img")[1][:-4]) for i in g) for g in under_a) == want
