"""Which runtime encodes a library's queries: torch (open_clip), or ONNX Runtime through graphs
exported for the library's model (`clipdex model export-onnx`), which needs no torch at all.

The graphs live in ``LIBRARY/models/onnx-<fingerprint>/``: the fingerprint names the model (its spec,
and for a local-dir model its weights file's size and mtime), so graphs of a replaced or fine-tuned
model are never used for another. ``runtime``: ``auto`` (ONNX when the graphs exist, else torch;
the default, or ``$CLIPDEX_RUNTIME``), ``onnx`` (refuse without graphs) or ``torch``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from clipdex.errors import ClipdexError
from clipdex.library.options import RUNTIMES
from clipdex.retrieval.models import WEIGHTS_NAME, ModelSpec


def runtime_choice(runtime: str | None = None) -> str:
    """``runtime``, else ``$CLIPDEX_RUNTIME``, else auto; a one-line error for anything else."""
    chosen = runtime or os.environ.get("CLIPDEX_RUNTIME") or "auto"
    if chosen not in RUNTIMES:
        raise ClipdexError(f"unknown runtime '{chosen}' (choose {', '.join(RUNTIMES)})")
    return chosen


def fingerprint(spec: ModelSpec) -> str:
    """16 hex digits naming exactly this model (a local-dir's weights by size and mtime)."""
    h = hashlib.sha256(spec.to_json().encode())
    if spec.local_dir is not None:
        try:
            st = (spec.local_dir / WEIGHTS_NAME).stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(b"no-weights")
    return h.hexdigest()[:16]


def graphs_dir(library: Path, spec: ModelSpec) -> Path:
    """Where the library keeps ``spec``'s ONNX graphs."""
    return library / "models" / f"onnx-{fingerprint(spec)}"
