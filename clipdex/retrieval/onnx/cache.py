"""Exported graphs outside a library: the user's cache of ONNX graphs per model, for `clipdex eval`.

A library keeps its model's graphs in ``LIBRARY/models/onnx-<fingerprint>/``; comparing models on
pairs (no library involved) exports each one once into ``<user cache>/clipdex/onnx/onnx-<fingerprint>/``
(``$CLIPDEX_ONNX_CACHE`` overrides the folder) and reuses it after.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipdex.errors import ClipdexError, ModelError

if TYPE_CHECKING:
    from clipdex.retrieval.models import ModelSpec

RUNTIMES = ("auto", "torch", "onnx")  # what encodes (clipdex.library.runtime chooses for a library)


def runtime_choice(runtime: str | None = None) -> str:
    """``runtime``, else ``$CLIPDEX_RUNTIME``, else auto; a one-line error for anything else."""
    chosen = runtime or os.environ.get("CLIPDEX_RUNTIME") or "auto"
    if chosen not in RUNTIMES:
        raise ClipdexError(f"unknown runtime '{chosen}' (choose {', '.join(RUNTIMES)})")
    return chosen


def fingerprint(spec: ModelSpec) -> str:
    """16 hex digits naming exactly this model (a local-dir's weights by size and mtime)."""
    from clipdex.retrieval.models import WEIGHTS_NAME

    h = hashlib.sha256(spec.to_json().encode())
    if spec.local_dir is not None:
        try:
            st = (spec.local_dir / WEIGHTS_NAME).stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(b"no-weights")
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    raw = os.environ.get("CLIPDEX_ONNX_CACHE")
    if raw:
        return Path(raw).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("clipdex")) / "onnx"


def eval_encoder(
    lm: Any, runtime: str | None = None, notice: Callable[[str], None] | None = None, cache: str | None = None
) -> Any:
    """The encoder `evaluate` runs ``lm`` with: ONNX Runtime on the CPU under auto/onnx (graphs
    exported into the cache the first time), torch otherwise or where the model cannot be
    exported (said once through ``notice``; under ``runtime="onnx"`` that is an error). ``cache``:
    the cache folder (default `cache_dir`; Ray actors get the driver's)."""
    from clipdex.retrieval.encoders import TorchEncoder

    chosen = runtime_choice(runtime)
    if chosen == "torch" or (chosen == "auto" and lm.device != "cpu"):
        return TorchEncoder(lm)
    from clipdex.retrieval.onnx.encoder import OnnxEncoder, read_manifest
    from clipdex.retrieval.onnx.export import export_model

    say = notice or (lambda _msg: None)
    folder = (Path(cache) if cache else cache_dir()) / f"onnx-{fingerprint(lm.spec)}"
    try:
        if read_manifest(folder) is None:
            say(f"exporting model {lm.spec} to ONNX Runtime (once per model, into {folder.parent}) …")
            folder.parent.mkdir(parents=True, exist_ok=True)
            export_model(lm, folder, on_progress=say)
        return OnnxEncoder(folder, "fp32", lm.device)
    except ModelError as e:
        if chosen == "onnx":
            raise
        say(f"{lm.spec} cannot run on ONNX Runtime ({e}); encoding it with torch")
        return TorchEncoder(lm)
