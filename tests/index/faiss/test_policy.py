"""clipdex.index.faiss.policy: which index kind a library gets, and the IVF list counts."""

from __future__ import annotations

import numpy as np

from clipdex.index.faiss import policy

BIG = 1 << 50  # a memory budget that never binds


def test_choose_kind_thresholds():
    assert policy.choose_kind(0, 512, BIG) == "flat"
    assert policy.choose_kind(5_000, 512, BIG) == "flat"
    assert policy.choose_kind(150_000, 512, BIG) == "flat"
    assert policy.choose_kind(150_001, 512, BIG) == "ivf-fp16"
    assert policy.choose_kind(1_000_000, 512, BIG) == "ivf-fp16"
    # The scan cost is n * dim: 1.2M 64-d vectors cost what 150k 512-d ones do.
    assert policy.choose_kind(1_200_000, 64, BIG) == "flat"
    # 1M x 512 float32 is 2 GB: past a 1 GiB budget the library goes to large-library mode.
    assert policy.choose_kind(1_000_000, 512, 1 << 30) == "ivf-pq-ondisk"
    # Only the float32 vectors beyond the budget do that: a budget short of the 8-byte ids too
    # gets smaller codes, still scanned (fp16, sq8, binary stay available by --index-type).
    n = 100_000
    assert policy.choose_kind(n, 512, n * (4 * 512 + 8)) == "flat"
    assert policy.choose_kind(n, 512, n * (4 * 512 + 4)) == "fp16"
    assert policy.choose_kind(n, 512, n * 4 * 512 - 1) == "ivf-pq-ondisk"
    assert policy.choose_kind(999, 512, 1) == "binary"  # too few to train on: never large-library mode


def test_ivf_layout_policy():
    assert policy.ivf_layout(1_000_000, 512) == (16_000, 32)  # lists assigned in a 32-d PCA space
    assert policy.ivf_layout(200_000, 768) == (5_128, 32)  # capped: 39 vectors a list
    assert policy.ivf_layout(20_000, 64) == (512, 64)  # few dims: their own space; >= 39 per list


def test_ivf_lists_keeps_each_index_kinds_list_count():
    """One list-count rule for every IVF index, each caller's numbers as they were."""
    ns = [0, 1, 38, 39, 1_000, 1_521, 5_001, 123_457, 1_000_000, 5_000_000, 2**40 + 3]
    for n in ns:
        assert policy.ivf_lists(n, 2) == max(1, min(int(2 * np.sqrt(n)), n // 39))  # in-memory ivf-pq
        assert policy.ivf_lists(n, 1) == max(1, min(int(np.sqrt(n)), n // 39))  # on-disk ivf-pq
        assert policy.ivf_lists(n, 16) == max(1, min(int(16 * n**0.5), n // 39))  # ivf_layout's kinds
        assert policy.ivf_lists(n, 2, min_points=None) == int(2 * np.sqrt(n))  # the duplicate finder
