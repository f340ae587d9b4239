"""The explain heat maps of `clipdex serve`: the last few kept, since each costs about a hundred
forward passes (see clipdex.retrieval.explain) and the page asks again when a view is reopened."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable


class HeatMaps:
    """``get(key, make)``: (PNG, score, tag) for ``key``, made by ``make() -> (PNG, score)`` unless
    one of the last ``keep`` is still there. ``tag`` (an ETag) follows the key alone, so a client's
    copy is checked with ``tag(key)`` without making the map."""

    def __init__(self, keep: int = 16):
        self.keep = keep
        self._kept: OrderedDict[tuple, tuple[bytes, float]] = OrderedDict()
        self._mutex = threading.Lock()

    @staticmethod
    def tag(key: tuple) -> str:
        return hashlib.sha256(repr(key).encode()).hexdigest()[:32]

    def kept(self, key: tuple) -> tuple[bytes, float] | None:
        """(PNG, score) when ``key``'s map is one of the last ``keep`` (it counts as a use), else None."""
        with self._mutex:
            if key not in self._kept:
                return None
            self._kept.move_to_end(key)
            return self._kept[key]

    def get(self, key: tuple, make: Callable[[], tuple[bytes, float]]) -> tuple[bytes, float, str]:
        answer = self.kept(key)
        if answer is None:
            answer = make()  # not under the mutex: other heat maps are served meanwhile
            with self._mutex:
                self._kept[key] = answer
                while len(self._kept) > self.keep:
                    self._kept.popitem(last=False)
        return (*answer, self.tag(key))
