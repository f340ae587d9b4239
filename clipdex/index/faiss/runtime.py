"""The FAISS module, imported on first use (``clipdex --help`` must not load it), and its threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def faiss_module() -> Any:
    """The ``faiss`` module (imported here, not at the top of the modules that use it)."""
    import faiss

    return faiss


@contextmanager
def single_thread(enabled: bool) -> Iterator[None]:
    """FAISS parallelises over queries: a few queries gain nothing from OpenMP, and its barriers
    cost more than the search when the cores are busy (a 100k flat scan: 10 ms -> 40 ms)."""
    if not enabled:
        yield
        return
    faiss = faiss_module()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
