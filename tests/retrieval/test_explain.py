"""`clipdex explain` / `Library.explain`: occlusion heat maps against planted truth and brute force.

A random-init model knows no words, so the text path cannot be tested for meaning honestly. The
mechanism is tested with a query whose answer is known by construction: the embedding of a picture
holding ONLY the red circle. Covering the circle in the two-shape scene moves the scene away from
that query, covering the blue square moves it closer, covering plain background changes nothing:
the heat must lie on the circle.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.corehelp import assert_one_error_line, ok
from helpers.embedhelp import encode_images
from PIL import Image, ImageDraw

from clipdex import Library
from clipdex.demo.__main__ import DEMO_MODEL
from clipdex.retrieval.embed import encode_texts
from clipdex.retrieval.explain import explain
from clipdex.retrieval.model_init import init_model
from clipdex.retrieval.models import load_model, resolve_spec

CIRCLE, RADIUS = (17, 32), 11


def scene(circle: bool = True, square: bool = True, size: int = 64) -> Image.Image:
    img = Image.new("RGB", (size, size), (250, 250, 250))
    d = ImageDraw.Draw(img)
    (cx, cy), r = CIRCLE, RADIUS
    if circle:
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(220, 30, 30))
    if square:
        d.rectangle((38, 23, 56, 41), fill=(30, 60, 220))
    return img


def test_heat_lies_on_the_object_the_query_shows(tiny_model_dir) -> None:
    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    target = encode_images(lm, [scene(square=False)])[0]
    result = explain(lm, scene(), target)
    assert result.heat.shape == (64, 64)
    hot = np.clip(result.heat, 0, None)
    yy, xx = np.mgrid[0:64, 0:64]
    # the circle plus a margin of half a window (the windows are 16 px): heat is window-smooth
    near_circle = (xx - CIRCLE[0]) ** 2 + (yy - CIRCLE[1]) ** 2 <= (RADIUS + 8) ** 2
    assert hot[near_circle].sum() > 0.75 * hot.sum()  # measured: 0.96 (the disc is 28% of the picture)
    cx, cy = (hot * xx).sum() / hot.sum(), (hot * yy).sum() / hot.sum()
    assert np.hypot(cx - CIRCLE[0], cy - CIRCLE[1]) < RADIUS
    assert result.heat[32, 47] < result.heat[CIRCLE[1], CIRCLE[0]]  # the square is not what matches


def test_resnet_tower_heat_equals_brute_force_occlusion(tmp_path) -> None:
    """Every open_clip tower goes through encode_image only: check one ResNet window by hand."""
    import open_clip

    (tmp_path / "rn.json").write_text(json.dumps(DEMO_MODEL))
    model_dir = init_model(str(tmp_path / "rn.json"), tmp_path / "rn", seed=0)
    lm = load_model(resolve_spec(str(model_dir)), "cpu")
    target = encode_texts(lm, ["a red circle on the left"])[0]
    picture = scene()
    result = explain(lm, picture, target)

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    model.eval()

    def cosine(img: Image.Image) -> float:
        with torch.no_grad():
            v = model.encode_image(preprocess(img)[None])[0].double()
        return float(v @ torch.from_numpy(target).double() / v.norm())

    assert result.score == pytest.approx(cosine(picture), abs=1e-6)
    # pixel (0, 0) lies under the first 16 x 16 window only; its cover is the median colour (white)
    covered = np.asarray(picture).copy()
    covered[:16, :16] = np.median(covered.reshape(-1, 3), axis=0).astype(np.uint8)
    # the model's input is 64 px, so the picture is used at its own size
    assert result.heat[0, 0] == pytest.approx(cosine(picture) - cosine(Image.fromarray(covered)), abs=2e-6)
    assert np.isfinite(result.heat).all()


def test_cli_explain_writes_the_heat_map_and_prints_the_score(tiny_model_dir, tmp_path) -> None:
    picture = tmp_path / "scene.png"
    scene(size=96).save(picture)
    res = ok(
        "explain", picture, "a", "red", "circle", "--out", tmp_path / "heat.png", "--model", tiny_model_dir
    )
    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    expect = float(
        encode_images(lm, [Image.open(picture).convert("RGB")])[0] @ encode_texts(lm, ["a red circle"])[0]
    )
    assert float(res.stdout.strip()) == pytest.approx(expect, abs=1e-4)
    with Image.open(tmp_path / "heat.png") as heat:
        assert heat.size == (96, 96) and heat.mode == "RGB"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    res = ok("explain", picture, "x", "--out", tmp_path / "h2.png", "--model", tiny_model_dir, "--json")
    assert set(json.loads(res.stdout)) == {"score", "out"}
    from helpers.corehelp import run

    assert_one_error_line(
        run("explain", bad, "x", "--out", tmp_path / "h3.png", "--model", tiny_model_dir), "bad.png"
    )


def test_library_explain_uses_its_model_and_gives_png(tiny_model_dir, tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    scene().save(photos / "s.png")
    ok("--library", tmp_path / "lib", "index", photos, "--model", tiny_model_dir, "--quiet")
    with Library.open(tmp_path / "lib") as lib:
        target = encode_images(lib.model, [scene(square=False)])[0]
        result = lib.explain(photos / "s.png", vector=target)
        direct = explain(lib.model, scene(), target)
        np.testing.assert_allclose(result.heat, direct.heat, atol=1e-6)  # float32 batch noise
        hit = lib.search(text="a red circle", k=1)[0]
        assert lib.explain(photos / "s.png", text="a red circle").score == pytest.approx(hit.score, abs=1e-5)
        png = result.png()
    assert png.startswith(b"\x89PNG")
