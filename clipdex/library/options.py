"""Where a library lives and which index types it takes. Stdlib only: ``clipdex --help`` reads it."""

from __future__ import annotations

import os
from pathlib import Path

from clipdex.errors import ClipdexError
from clipdex.index.faiss.policy import INDEX_TYPES, ONDISK
from clipdex.index.store.schema import DB_NAME
from clipdex.retrieval.onnx.cache import RUNTIMES  # which encodes (torch-free, stdlib only)

__all__ = [
    "INDEX_TYPES", "ONDISK", "PRECISIONS", "RUNTIMES", "check_index_type", "database_path",
    "default_library_dir", "library_dir",
]  # fmt: skip

PRECISIONS = ("fp32", "int8")  # the library's vectors: int8 is ONNX Runtime's dynamic quantisation


def default_library_dir() -> Path:
    """``$CLIPDEX_LIBRARY``, else the platform data dir's ``clipdex/default``."""
    env = os.environ.get("CLIPDEX_LIBRARY")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("clipdex")) / "default"


def library_dir(path: str | os.PathLike | None) -> Path:
    """The library folder ``path`` names (absolute, ``~`` expanded), or the default one."""
    return Path(path).expanduser().absolute() if path is not None else default_library_dir()


def database_path(path: str | os.PathLike | None) -> Path:
    """The SQLite file of the library at ``path`` (which may not exist yet)."""
    return library_dir(path) / DB_NAME


def check_index_type(index_type: str) -> None:
    """Refuse an unknown ``--index-type`` with the list of known ones."""
    if index_type not in ("auto", *INDEX_TYPES):
        raise ClipdexError(f"unknown index type '{index_type}' (choose auto, {', '.join(INDEX_TYPES)})")
