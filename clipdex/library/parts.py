"""The parts a Library is made of, handed as one record to the verbs that work on them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clipdex.index.faiss.index_set import IndexSet
from clipdex.index.store.database import Store
from clipdex.index.store.lock import WriterLock
from clipdex.library.model_slot import ModelSlot


@dataclass(frozen=True)
class Parts:
    """A library's folder, SQLite store, FAISS indexes and model slot."""

    path: Path
    store: Store
    indexes: IndexSet
    models: ModelSlot

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer lock with the store open for writing (re-entrant)."""
        with WriterLock(self.path):
            self.store.make_writable()
            yield
