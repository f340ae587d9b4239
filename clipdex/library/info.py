"""`clipdex info`: what a library holds and what it costs on disk."""

from __future__ import annotations

import json

from clipdex.index.store.schema import DB_NAME
from clipdex.kinds import IMAGE, TEXT
from clipdex.library.parts import Parts


def describe(parts: Parts) -> dict:
    """Model, dimension, counts by kind, index types, paths and sizes on disk, the storage mode.

    Each index's ``bytes_per_vector`` is what it holds in RAM per vector; an on-disk index
    (large-library mode) adds ``index_bytes_per_vector_on_disk`` (its mapped lists and ids) and
    ``vector_bytes_per_vector_on_disk`` (the float16 vectors)."""
    spec = parts.models.stored
    files = {p.name: p.stat().st_size for p in sorted(parts.path.iterdir()) if p.is_file()}
    models = parts.path / "models"
    model_bytes = sum(f.stat().st_size for f in models.rglob("*") if f.is_file()) if models.is_dir() else 0
    counts = parts.store.items.counts()
    listed = parts.store.vector_files.listed()
    vector_bytes = sum(size for *_, size in listed)
    indexes = {}
    for kind in (IMAGE, TEXT):
        idx = parts.indexes.view(kind)
        indexes[kind + "s"] = {**idx.info, "ntotal": idx.ntotal}
    return {
        "library": str(parts.path),
        "database": str(parts.path / DB_NAME),
        "model": spec.name if spec else None,
        "pretrained": spec.pretrained if spec else None,
        "dim": parts.store.dim,
        # the model's tokenizer as recorded with its vectors (kind, vocabulary, context length, hash)
        "tokenizer": json.loads(parts.store.meta.get("tokenizer") or "null"),
        "images": counts["images"],
        "texts": counts["texts"],
        "failed_files": parts.store.failures.count(),
        "counts": counts,
        "indexes": indexes,
        "generation": parts.store.generation,
        "schema_version": int(parts.store.meta.get("schema_version") or 0),
        "bytes_on_disk": sum(files.values()) + model_bytes + vector_bytes,
        "files": files,
        # Large-library mode: vectors as float16 rows of files in vectors/ (clipdex.index.faiss.ondisk).
        "mode": "large-library" if parts.store.vector_files.large_mode else "normal",
        "vector_files": {"count": len(listed), "bytes": vector_bytes},
        "runtime": parts.models.runtime_name,  # what encodes queries (clipdex.library.runtime)
        "precision": parts.models.precision,  # of the stored vectors: fp32, or int8 (ONNX Runtime)
        "ocr": {"on": parts.store.meta.get("ocr") == "on", **parts.store.texts.counts()},
    }
