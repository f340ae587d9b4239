"""The torch-free image transform gives open_clip's pixels (max abs diff < 1e-6) for every resize mode."""

from __future__ import annotations

import numpy as np
import pytest
from open_clip.transform import image_transform
from PIL import Image

from clipdex.retrieval.onnx.preprocess import Preprocess, UnsupportedPreprocess, describe

SIZES_WH = [(64, 64), (640, 480), (33, 517), (1, 1), (224, 224), (300, 10), (97, 64), (65, 63)]
MODES = ["RGB", "L", "RGBA", "P", "LA", "1", "CMYK", "I"]


def picture(w: int, h: int, mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    return img.convert(mode)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [64, (48, 80), 224])
@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_pixels_equal_open_clip(resize_mode: str, size, interpolation: str) -> None:
    transform = image_transform(size, is_train=False, resize_mode=resize_mode, interpolation=interpolation,
                                fill_color=7)  # fmt: skip
    twin = Preprocess(describe(transform))
    for n, (w, h) in enumerate(SIZES_WH):
        for mode in MODES:
            img = picture(w, h, mode, seed=n)
            expected, got = transform(img).numpy(), twin(img)
            assert got.dtype == np.float32 and got.shape == expected.shape, (mode, w, h)
            assert float(np.abs(got - expected).max()) < 1e-6, (mode, w, h)


def test_model_transform_and_batch(tiny_lm) -> None:
    twin = Preprocess(describe(tiny_lm.preprocess))
    images = [picture(w, h, "RGB", seed=n) for n, (w, h) in enumerate(SIZES_WH)]
    batch = twin.batch(images)
    assert batch.shape == (len(images), 3, 64, 64)
    expected = np.stack([tiny_lm.preprocess(im).numpy() for im in images])
    assert float(np.abs(batch - expected).max()) < 1e-6


def test_description_is_json() -> None:
    import json

    steps = describe(image_transform(64, is_train=False, resize_mode="longest"))
    assert Preprocess(json.loads(json.dumps(steps))).steps == steps
    assert [s["op"] for s in steps] == ["resize_keep_ratio", "center_crop", "rgb", "to_array", "normalize"]


def test_unknown_steps_are_refused() -> None:
    from torchvision import transforms as T

    base = image_transform(64, is_train=False).transforms
    with pytest.raises(UnsupportedPreprocess, match="Lambda"):
        describe(T.Compose([*base[:2], T.Lambda(lambda im: im), *base[2:]]))

    def grey(im):
        return im.convert("L")

    with pytest.raises(UnsupportedPreprocess, match="function"):  # only open_clip's own RGB conversion
        describe(T.Compose([*base[:2], grey, *base[3:]]))
    with pytest.raises(UnsupportedPreprocess, match="max_size"):
        describe(T.Compose([T.Resize(64, max_size=100), *base[1:]]))
    with pytest.raises(UnsupportedPreprocess, match="tensor"):
        describe(T.Compose(base[:2]))
    with pytest.raises(UnsupportedPreprocess, match="RGB"):
        describe(T.Compose([*base[:2], *base[3:]]))
