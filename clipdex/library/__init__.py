"""The Library: the one door to clipdex's engine, joining storage (`clipdex.index`) and models
(`clipdex.retrieval`).

`Library` (facade.py) holds its parts by composition: the SQLite `Store`, the FAISS `IndexSet` and
a `ModelSlot` (model_slot.py). Its verbs live beside it and receive the parts they use: indexing.py
(scan a folder, encode, store), importing.py (vectors computed elsewhere), reembed.py (a new model
for everything), finetuning.py (pairs in, a model out), check.py (consistency and repair) and
search.py (queries, similar items, duplicates). options.py and tools.py are the light public
helpers the CLI needs without a library (paths, index types, model files, text files).

Names are exported lazily, so that ``clipdex --help`` imports neither torch nor faiss.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipdex.index.scan import check_folders
    from clipdex.library.facade import Library
    from clipdex.library.options import (
        INDEX_TYPES,
        ONDISK,
        PRECISIONS,
        RUNTIMES,
        check_index_type,
        database_path,
        default_library_dir,
        library_dir,
    )
    from clipdex.library.tools import embed_sources, explain_file, init_model, read_texts, shard_model
    from clipdex.retrieval.training.finetune import FinetuneConfig

_WHERE = {
    "FinetuneConfig": "clipdex.retrieval.training.finetune",
    "Library": "facade",
    "INDEX_TYPES": "options",
    "ONDISK": "options",
    "PRECISIONS": "options",
    "RUNTIMES": "options",
    "check_index_type": "options",
    "check_folders": "clipdex.index.scan",
    "database_path": "options",
    "default_library_dir": "options",
    "library_dir": "options",
    "embed_sources": "tools",
    "explain_file": "tools",
    "init_model": "tools",
    "read_texts": "tools",
    "shard_model": "tools",
}
__all__ = [
    "FinetuneConfig",
    "INDEX_TYPES",
    "Library",
    "ONDISK",
    "PRECISIONS",
    "RUNTIMES",
    "check_folders",
    "check_index_type",
    "database_path",
    "default_library_dir",
    "embed_sources",
    "explain_file",
    "init_model",
    "library_dir",
    "read_texts",
    "shard_model",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    where = _WHERE[name]
    return getattr(import_module(where if "." in where else f"clipdex.library.{where}"), name)
