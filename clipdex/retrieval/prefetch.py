"""Ordered bounded prefetch: decode (or any per-item work) in a thread pool, in input order.

Threads suffice: Pillow's decoders and resizers release the GIL.
"""

from __future__ import annotations

import os
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
