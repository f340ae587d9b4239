"""Text queries that arrive while the model is busy are encoded together, in one forward pass.

No timer and no added latency: a lone query is encoded at once. While one forward pass runs, the
queries that come in queue up; the next thread to get the model takes the whole queue (up to
``max_batch``), and the others find their vectors ready. Under load this turns N forward passes
into about one per batch, which costs little more than a single query.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np


class _Slot:
    __slots__ = ("text", "vector", "error", "done")

    def __init__(self, text: str):
        self.text = text
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class TextBatcher:
    """``encode(text)`` for many threads over ``encode_many(texts) -> (n, d)``, serialised by
    ``model_lock`` (shared with other users of the model, e.g. image queries)."""

    def __init__(
        self,
        encode_many: Callable[[Sequence[str]], np.ndarray],
        model_lock: threading.Lock,
        max_batch: int = 32,
    ):
        self.encode_many = encode_many
        self.model_lock = model_lock
        self.max_batch = max_batch
        self._queue: list[_Slot] = []
        self._mutex = threading.Lock()

    def queued(self) -> int:
        with self._mutex:
            return len(self._queue)

    def encode(self, text: str) -> np.ndarray:
        slot = _Slot(text)
        with self._mutex:
            self._queue.append(slot)
        while not slot.done:
            with self.model_lock:
                if slot.done:  # a previous holder encoded it with its batch
                    break
                with self._mutex:
                    batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    vectors = self.encode_many([s.text for s in batch])
                    for s, v in zip(batch, vectors):
                        s.vector = v
                except BaseException as e:  # every waiter of this batch sees the failure
                    for s in batch:
                        s.error = e
                for s in batch:
                    s.done = True
        if slot.error is not None:
            raise slot.error
        return slot.vector
