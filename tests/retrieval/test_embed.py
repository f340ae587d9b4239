"""clipdex.retrieval.embed: batch sizes and pipelined batches, made right by construction for the GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers.corehelp import tol

from clipdex.library import Library
from clipdex.retrieval.models import load_model, resolve_spec


def test_add_texts_in_small_batches_equals_one_encoding(tiny_model_dir: Path, tmp_path: Path):
    from clipdex.kinds import TEXT
    from clipdex.retrieval.embed import encode_texts

    texts = [f"text number {i} about {w}" for i, w in enumerate("dogs cats sea sky hills snow rain".split())]
    with Library.open(tmp_path / "lib", create=True, model=str(tiny_model_dir), device="cpu") as lib:
        ids = lib.add_texts(texts + texts[:2], batch_size=3)  # repeats are not added again
        assert lib.add_texts(texts, batch_size=3) == []
        got_ids, got = lib.store.vectors.all(TEXT)
        assert list(got_ids) == ids and len(ids) == len(texts)
        assert [lib.store.items.record(i)["text"] for i in ids] == texts
        want = encode_texts(lib.model, texts, batch_size=len(texts))
        np.testing.assert_allclose(got, want, atol=tol(lib.model.device))
        for t in texts:
            assert lib.search(text=t, target="texts", k=1)[0].text == t


def test_batch_defaults_by_device_and_env(monkeypatch):
    from clipdex.retrieval.encoders import default_batch_size

    monkeypatch.delenv("CLIPDEX_BATCH_SIZE", raising=False)
    assert default_batch_size("cpu") == 32 and default_batch_size("cuda:0") == 256
    monkeypatch.setenv("CLIPDEX_BATCH_SIZE", "7")
    assert default_batch_size("cuda") == 7


def test_pipelined_batches_keep_order_failures_and_vectors(tiny_model_dir: Path, tmp_path: Path):
    """One batch in flight while the next decodes: every vector still lands on its own item."""
    from helpers.corehelp import make_images
    from helpers.embedhelp import encode_images
    from PIL import Image

    from clipdex.retrieval.embed import embed_image_files

    files = make_images(tmp_path / "imgs", [f"im{i}.png" for i in range(10)], seed=4)
    paths = [files[f"im{i}.png"] for i in range(10)]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    items = paths[:4] + [tmp_path / "bad.png"] + paths[4:]
    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    out = list(embed_image_files(lm, items, str, batch_size=3, workers=2, draft_to=None))
    got = [(p, v) for encoded, _, _ in out for p, v in encoded]
    assert [p for p, _ in got] == paths
    assert [p for _, failed, _ in out for p, _ in failed] == [tmp_path / "bad.png"]
    assert [done for _, _, done in out] == sorted(done for _, _, done in out) and out[-1][2] == len(items)
    want = encode_images(lm, [Image.open(p).convert("RGB") for p in paths])
    np.testing.assert_allclose(np.stack([v for _, v in got]), want, atol=tol(lm.device))
