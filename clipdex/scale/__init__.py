"""Embedding at scale: `clipdex embed` (in-process or on a Ray cluster) into clip-retrieval's shard layout.

``sources`` lists the input files, ``load`` reads one file (local or fsspec URL) into model input,
``shards`` owns the folder layout (atomic shard writes, manifest, reading shards back), ``job``
plans a job and runs it in-process, ``ray_job`` runs the same plan as a Ray Data pipeline, and
``run`` (`clipdex embed`) picks one.
"""

from __future__ import annotations

from clipdex.errors import ClipdexError

SCALE_HINT = "pip install 'clipdex[scale]'"


def require_pyarrow() -> None:
    """One clear line when the `scale` extra (pyarrow) is missing."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise ClipdexError(f"embedding shards need pyarrow: {SCALE_HINT}") from e


def require_ray() -> None:
    """One clear line when `--ray` is asked for but Ray Data is not installed."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ClipdexError(f"--ray needs Ray Data: {SCALE_HINT}") from e
