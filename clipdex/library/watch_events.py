"""File-system events for a watcher: watchfiles on a thread of its own, feeding a queue."""

from __future__ import annotations

import os
import queue
import threading
import time

STEP_MS = 50  # watchfiles: a group of events ends after this much quiet…
GROUP_MS = 500  # …or after this long


class Events:
    """watchfiles on a thread of its own, feeding a queue (so that a long batch loses nothing and
    the loop can wait with a timeout); ``failed`` says why it stopped early."""

    def __init__(self, roots: list[bytes], stop: threading.Event, backoff: float = 1.0):
        self.roots = roots
        self.queue: queue.Queue = queue.Queue()
        self.failed: str | None = None
        self.backoff = backoff
        self.short_lived = False
        self._stop = threading.Event()
        self._outer = stop
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="clipdex-watch-events", daemon=True)
        if roots:
            self._thread.start()

    def _run(self) -> None:
        import watchfiles

        stop = _Either(self._stop, self._outer)
        try:
            for changes in watchfiles.watch(
                *[os.fsdecode(r) for r in self.roots], watch_filter=None, debounce=GROUP_MS, step=STEP_MS,
                stop_event=stop, rust_timeout=1000, raise_interrupt=False,
            ):  # fmt: skip
                self.queue.put(changes)
        except (
            Exception
        ) as e:  # the OS dropped the watch (watch limit, unmount, a name watchfiles cannot read)
            self.short_lived = time.monotonic() - self._started < 5
            self.failed = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.queue.put(None)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class _Either:
    """An event that is set when either of two is (watchfiles polls ``is_set``)."""

    def __init__(self, a: threading.Event, b: threading.Event):
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()
