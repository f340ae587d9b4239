"""clipdex: cross-modal search over your own image collections (CLIP + FAISS + SQLite)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Library", "Filter", "ClipdexError", "evaluate", "__version__"]

if TYPE_CHECKING:
    from clipdex.errors import ClipdexError
    from clipdex.index.filters import Filter
    from clipdex.library import Library
    from clipdex.retrieval.training.evaluate import evaluate


def __getattr__(name: str) -> Any:
    # Lazy so that `import clipdex` (and `clipdex --help`) never pulls in torch or faiss.
    if name == "Library":
        from clipdex.library import Library

        return Library
    if name == "Filter":
        from clipdex.index.filters import Filter

        return Filter
    if name == "evaluate":
        from clipdex.retrieval.training.evaluate import evaluate

        return evaluate
    if name == "ClipdexError":
        from clipdex.errors import ClipdexError

        return ClipdexError
    raise AttributeError(name)
