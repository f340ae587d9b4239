"""Ordered bounded prefetch: decode (or any per-item work) in a thread pool, in input order.

Threads suffice: Pillow's decoders and resizers release the GIL.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Decode threads to use: every CPU this process may run on (not capped: feeding a GPU takes
    all of them, and on CPU alone the encoder's threads share the same cores anyway)."""
    try:
        cpus = len(os.sched_getaffinity(0))  # respects container / taskset limits
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus)


def _outcome(future: Future) -> object:
    exc = future.exception()
    return exc if exc is not None else future.result()


def ordered_prefetch(
    fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int | None = None
) -> Iterator[tuple[T, R | BaseException]]:
    """Yield ``(item, fn(item) or the exception it raised)`` in input order, computed by a thread pool.

    At most ``ahead`` (default ``4 * workers``) items are submitted and not yet yielded, and ``items``
    is consumed lazily, so memory stays bounded on huge inputs. ``workers <= 1`` runs inline. Closing
    the generator early cancels queued work and waits only for the calls already running.
    """
    if workers <= 1:
        for item in items:
            try:
                result: R | BaseException = fn(item)
            except Exception as exc:  # handed to the consumer as a value
                result = exc
            yield item, result
        return
    ahead = max(1, 4 * workers if ahead is None else ahead)
    pending: deque[tuple[T, Future]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipdex-decode")
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= ahead:
                done_item, future = pending.popleft()
                yield done_item, _outcome(future)  # type: ignore[misc]
        while pending:
            done_item, future = pending.popleft()
            yield done_item, _outcome(future)  # type: ignore[misc]
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def background(items: Iterable[T], ahead: int, name: str = "clipdex-background") -> Iterator[T]:
    """``items`` produced in one thread, at most ``ahead`` waiting: e.g. a video's decoding (PyAV
    releases the GIL) overlaps encoding; an error in the producer is raised here, in order.
    Closing the generator early stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for f in items:
                while not stop.is_set():
                    try:
                        q.put((f, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as e:  # handed to the consumer
            q.put((end, e))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
