"""Which runtime encodes: torch (open_clip), or ONNX Runtime through graphs exported for the
library's model, which needs no torch at all.

The graphs live in ``LIBRARY/models/onnx-<fingerprint>/``: the fingerprint names the model (its spec,
and for a local-dir model its weights file's size and mtime), so graphs of a replaced or fine-tuned
model are never used for another. A writer exports them the first time it encodes with ONNX Runtime
(`clipdex check --repair` and `clipdex model export-onnx` do too); a reader never writes, so one
that finds none encodes with torch. ``runtime``: ``auto`` (the default, or ``$CLIPDEX_RUNTIME``:
ONNX Runtime where it has a provider for the device, else torch), ``onnx`` or ``torch``.
``precision`` (``fp32``, or ``int8``: dynamically quantised graphs, CPU) is the library's, recorded
with its model; a change of precision is a re-embedding.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from clipdex.errors import ClipdexError
from clipdex.library.options import PRECISIONS
from clipdex.retrieval.models import ModelSpec
from clipdex.retrieval.onnx.cache import fingerprint, runtime_choice

__all__ = ["fingerprint", "runtime_choice"]  # re-exported: the library's model slot uses them


def graphs_dir(library: Path, spec: ModelSpec) -> Path:
    """Where the library keeps ``spec``'s ONNX graphs."""
    return library / "models" / f"onnx-{fingerprint(spec)}"


SAMPLE = 64  # of the user's pictures, for int8's agreement figures


def precision_choice(precision: str | None) -> str | None:
    """``precision`` checked (None: the library's own)."""
    if precision is not None and precision not in PRECISIONS:
        raise ClipdexError(f"unknown precision '{precision}' (choose {', '.join(PRECISIONS)})")
    return precision


def gpu_runtime(device: str) -> str | None:
    """On a GPU (asked for, or found by auto): ``onnx`` when onnxruntime-gpu has CUDA, else ``torch``;
    None on the CPU. Torch is imported only where a GPU may exist at all."""
    import onnxruntime as ort

    cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        device = os.environ.get("CLIPDEX_DEVICE", "").strip().lower() or "auto"
    if device == "cpu":
        return None
    if device == "auto":
        if cuda_ep:
            return "onnx"
        if not (os.path.exists("/proc/driver/nvidia") or sys.platform == "darwin"):
            return None  # no driver: no GPU, and no torch import to find that out
        from clipdex.retrieval.models import pick_device

        device = pick_device("auto")
        if device == "cpu":
            return None
    return "onnx" if device.startswith("cuda") and cuda_ep else "torch"


def sample_pictures(paths: list[bytes], size: tuple[int, int], n: int = SAMPLE) -> list:
    """Up to ``n`` decodable pictures from ``paths`` (evenly spread), drafted near ``size``."""
    from clipdex.retrieval.decode import open_image

    step = max(1, len(paths) // n)
    out = []
    for p in paths[::step]:
        if len(out) >= n:
            break
        try:
            im = open_image(p, size)
        except Exception:  # noqa: S112 (a picture that fails here fails, and is reported, when indexed)
            continue
        im.thumbnail((size[0] * 4, size[1] * 4))  # what the model sees is unchanged; memory stays small
        out.append(im)
    return out
