"""Helpers for the ONNX path's tests (a helper module, not a test)."""

from __future__ import annotations


def probe_pictures(n: int = 5, size: int = 64) -> list:
    """Seeded RGB pictures of varied shapes (the child process of test_torch_free makes the same)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(123)
    shapes = [(size, size), (size * 2, size + 9), (31, 200), (size * 3, size * 3), (1, 1)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes[:n]]
