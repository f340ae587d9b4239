"""GPU paths made right by construction, exercised on the CPU by simulating their limits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from corehelp import brute_force, ok, tol

from clipdex.errors import ModelError
from clipdex.index.faiss import ann as A
from clipdex.index.faiss import build as B
from clipdex.index.faiss import gpu as G
from clipdex.library import Library
from clipdex.retrieval.models import init_model, load_model, pick_device, resolve_spec

D = 32


class KLimited:
    """A CPU FAISS index posing as a GPU one: like FAISS GPU, it refuses k > ann.GPU_MAX_K."""

    def __init__(self, index):
        self.index = index
        self.asked: list[int] = []

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def search(self, q, k, params=None):
        self.asked.append(k)
        assert k <= A.GPU_MAX_K, f"GPU search asked for k={k} > {A.GPU_MAX_K}"
        return self.index.search(q, k, params=params)


def fake_gpu(cpu: A.AnnIndex) -> A.AnnIndex:
    return A.AnnIndex(cpu.kind, KLimited(cpu.index), dict(cpu.info, device="gpu"), cpu.codec, set(), cpu=cpu)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, D))
    x = centres[rng.integers(0, 20, 3000)] + 0.5 * rng.standard_normal((3000, D))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[:5] + 0.1 * rng.standard_normal((5, D)).astype(np.float32)
    return np.arange(1, 3001, dtype=np.int64) * 7, x, q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "ivf-pq"])
def test_gpu_search_past_its_k_limit_runs_on_the_cpu_index(data, kind, monkeypatch):
    ids, x, q = data
    cpu = B.build(x, ids, kind, seed=0)
    limit = 5 * cpu.info["params"].get("rerank", 1) + A.MARGIN  # k=5 fits, k=30 and k=200 do not
    monkeypatch.setattr(A, "GPU_MAX_K", limit)
    gpu = fake_gpu(cpu)

    def get_vectors(want):
        return x[np.searchsorted(ids, want)]

    for k in (5, 30, 200):  # fetch = k * rerank + margin: within, around and far past the limit
        s_gpu, i_gpu = gpu.search(q, k, get_vectors)
        s_cpu, i_cpu = cpu.search(q, k, get_vectors)
        np.testing.assert_array_equal(i_gpu, i_cpu)
        if kind == "flat":  # exact candidates: the answer is the brute-force ranking
            for row, qq in enumerate(q):
                assert [int(i) for i in i_gpu[row]] == [i for i, _ in brute_force(ids, x, qq, k)]
    assert gpu.index.asked and max(gpu.index.asked) <= limit  # the GPU copy did answer the small ones


def test_gpu_copy_needs_a_long_lived_library(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    """One-shot searches never clone the index to the GPU; Library(gpu_index=True) (serve) does."""
    lib_dir = tmp_path / "lib"
    (tmp_path / "t.txt").write_text("a red square\na blue circle\na green line\n")
    ok("--library", lib_dir, "add-texts", tmp_path / "t.txt", "--model", tiny_model_dir)
    cloned: list[str] = []

    def to_gpu(index: A.AnnIndex) -> A.AnnIndex:
        cloned.append(index.kind)
        return fake_gpu(index)

    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(G, "to_gpu", to_gpu)  # where VectorIndex looks it up
    ok("--library", lib_dir, "search", "red", "--target", "texts", "--device", "cpu")
    with Library.open(lib_dir) as lib:
        lib.search(text="red", target="texts")
    assert cloned == []
    with Library.open(lib_dir, gpu_index=True) as lib:
        hits = lib.search(text="a red square", target="texts", k=3)
        lib.search(text="blue", target="texts", k=3)
    assert cloned == ["flat"]  # once, then kept
    assert hits[0].text == "a red square"


def test_clipdex_device_env(monkeypatch):
    monkeypatch.setenv("CLIPDEX_DEVICE", "cpu")
    assert pick_device("auto") == "cpu"
    monkeypatch.setenv("CLIPDEX_DEVICE", "tpu")
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        pick_device("auto")
    assert pick_device("cpu") == "cpu"  # an explicit --device wins over the variable


def test_search_device_option_errors_in_one_line(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    from corehelp import assert_one_error_line, run

    (tmp_path / "t.txt").write_text("a red square\n")
    ok("--library", tmp_path / "lib", "add-texts", tmp_path / "t.txt", "--model", tiny_model_dir)
    bad = run("--library", tmp_path / "lib", "search", "red", "--target", "texts", "--device", "tpu")
    assert_one_error_line(bad, "tpu")
    monkeypatch.setenv("CLIPDEX_DEVICE", "cpu")
    assert "a red square" in ok("--library", tmp_path / "lib", "search", "red", "--target", "texts").stdout


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


TIMM_CFG = {
    "embed_dim": 48,
    "custom_text": True,
    "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224",
                   "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "linear"},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                 "no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
}  # fmt: skip


def test_embed_dim_of_a_timm_tower_model(tmp_path: Path):
    """A SigLIP-like CustomTextCLIP (timm image tower, text projection inside model.text)."""
    pytest.importorskip("timm")
    import torch

    (tmp_path / "cfg.json").write_text(json.dumps(TIMM_CFG))
    model_dir = init_model(str(tmp_path / "cfg.json"), tmp_path / "timm")
    lm = load_model(resolve_spec(str(model_dir)), "cpu")
    assert type(lm.model).__name__ == "CustomTextCLIP"
    assert lm.embed_dim == 48
    with torch.inference_mode():
        img = lm.model.encode_image(torch.zeros(1, 3, *lm.image_size))
        txt = lm.model.encode_text(lm.tokenizer(["a photo"]))
    assert img.shape[-1] == txt.shape[-1] == lm.embed_dim


def test_batch_defaults_by_device_and_env(monkeypatch):
    from clipdex.retrieval.embed import default_batch_size

    monkeypatch.delenv("CLIPDEX_BATCH_SIZE", raising=False)
    assert default_batch_size("cpu") == 32 and default_batch_size("cuda:0") == 256
    monkeypatch.setenv("CLIPDEX_BATCH_SIZE", "7")
    assert default_batch_size("cuda") == 7


def test_pipelined_batches_keep_order_failures_and_vectors(tiny_model_dir: Path, tmp_path: Path):
    """One batch in flight while the next decodes: every vector still lands on its own item."""
    from corehelp import make_images
    from PIL import Image

    from clipdex.retrieval.embed import embed_image_files, encode_images

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


def test_device_jpeg_decoding_matches_the_cpu_path(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    """The JPEG-on-device path (run here on the CPU with torchvision's decoder): JPEGs decoded in
    batches, a PNG and a refused JPEG through the CPU path, vectors close to the PIL path's."""
    from corehelp import blocks_image

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
