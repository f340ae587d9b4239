"""clipdex.retrieval.device_decode: JPEGs decoded on the device (here the CPU) match the PIL path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipdex.retrieval.models import load_model, resolve_spec


def test_device_jpeg_decoding_matches_the_cpu_path(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    """The JPEG-on-device path (run here on the CPU with torchvision's decoder): JPEGs decoded in
    batches, a PNG and a refused JPEG through the CPU path, vectors close to the PIL path's."""
    from helpers.corehelp import blocks_image

    from clipdex.retrieval import device_decode as dd
    from clipdex.retrieval.embed import embed_image_files

    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(7):
        p = folder / f"im{i}.jpg"
        blocks_image(i, size=96 + 16 * i).save(p, quality=95)
        paths.append(p)
    blocks_image(50).save(folder / "im.png")
    good = (folder / "im3.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 3])  # a JPEG header, a truncated body
    items = [*paths[:3], folder / "im.png", folder / "cut.jpg", *paths[3:]]
    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    assert dd.device_transform(lm.preprocess) is not None
    monkeypatch.setattr(dd, "CHUNK", 3)  # several device calls per batch, one of them failing
    on_device: list[int] = []
    real = dd.decode_on_device
    monkeypatch.setattr(dd, "decode_on_device", lambda j, d, t: on_device.append(len(j)) or real(j, d, t))

    def run(device_decode: bool):
        out = list(embed_image_files(lm, items, str, batch_size=4, workers=2, draft_to=None,
                                     device_decode=device_decode))  # fmt: skip
        return dict(p for enc, _, _ in out for p in enc), [i for _, f, _ in out for i, _ in f]

    cpu_vecs, cpu_failed = run(False)
    assert on_device == []
    dev_vecs, dev_failed = run(True)
    assert sum(on_device) == len(paths) + 1  # every JPEG (the cut one too) went to the device first
    assert dev_failed == cpu_failed == [folder / "cut.jpg"]
    assert list(dev_vecs) == list(cpu_vecs) == [p for p in items if p != folder / "cut.jpg"]
    for p in dev_vecs:
        assert float(dev_vecs[p] @ cpu_vecs[p]) > 0.99, p  # resampling differs a little, not more
    assert np.array_equal(dev_vecs[folder / "im.png"], cpu_vecs[folder / "im.png"])


def test_device_decoding_switch(monkeypatch):
    from clipdex.retrieval.device_decode import enabled

    monkeypatch.delenv("CLIPDEX_GPU_DECODE", raising=False)
    assert enabled("cuda") and not enabled("cpu")
    monkeypatch.setenv("CLIPDEX_GPU_DECODE", "0")
    assert not enabled("cuda")
    monkeypatch.setenv("CLIPDEX_GPU_DECODE", "1")
    assert enabled("cpu")
