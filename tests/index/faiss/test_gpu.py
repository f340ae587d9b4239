"""clipdex.index.faiss GPU paths made right by construction, exercised on the CPU by simulating their
limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import brute_force, ok

from clipdex.index.faiss import ann as A
from clipdex.index.faiss import build as B
from clipdex.index.faiss import gpu as G
from clipdex.library import Library

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
