"""clipdex.retrieval.prefetch: ordered, bounded, lazy, early-stoppable."""

from __future__ import annotations

import random
import threading
import time

from clipdex.retrieval.prefetch import default_workers, ordered_prefetch


def test_default_workers() -> None:
    assert 1 <= default_workers() <= 8


# --- ordered_prefetch -------------------------------------------------------------------------


def test_prefetch_keeps_input_order_under_random_delays() -> None:
    rng = random.Random(0)
    delays = [rng.uniform(0, 0.004) for _ in range(60)]

    def slow_square(i: int) -> int:
        time.sleep(delays[i])
        return i * i

    got = list(ordered_prefetch(slow_square, range(60), workers=4))
    assert got == [(i, i * i) for i in range(60)]


def test_prefetch_bounds_in_flight_and_consumes_lazily() -> None:
    lock = threading.Lock()
    state = {"pulled": 0, "running": 0, "max_running": 0}

    def source():
        for i in range(100):
            state["pulled"] += 1
            yield i

    def work(i: int) -> int:
        with lock:
            state["running"] += 1
            state["max_running"] = max(state["max_running"], state["running"])
        time.sleep(0.001)
        with lock:
            state["running"] -= 1
        return i

    consumed = 0
    for item, result in ordered_prefetch(work, source(), workers=3, ahead=5):
        assert item == result == consumed
        assert state["pulled"] - consumed <= 5  # never more than `ahead` items taken but not yet handed out
        consumed += 1
    assert consumed == 100
    assert state["max_running"] <= 3


def test_prefetch_exceptions_are_values() -> None:
    def fail_odd(i: int) -> int:
        if i % 2:
            raise ValueError(f"odd {i}")
        return i

    got = list(ordered_prefetch(fail_odd, range(10), workers=3))
    assert [item for item, _ in got] == list(range(10))
    for item, result in got:
        if item % 2:
            assert isinstance(result, ValueError) and str(result) == f"odd {item}"
        else:
            assert result == item


def test_prefetch_inline_with_one_worker() -> None:
    main = threading.current_thread()
    seen_threads = set()

    def record(i: int) -> int:
        seen_threads.add(threading.current_thread())
        if i == 2:
            raise KeyError(i)
        return -i

    got = list(ordered_prefetch(record, iter(range(4)), workers=1))
    assert [i for i, _ in got] == [0, 1, 2, 3]
    assert got[1][1] == -1 and isinstance(got[2][1], KeyError)
    assert seen_threads == {main}


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("clipdex-decode")]


def test_prefetch_early_stop_does_not_hang() -> None:
    def slow(i: int) -> int:
        time.sleep(0.02)
        return i

    start = time.monotonic()
    gen = ordered_prefetch(slow, (i for i in range(1_000_000)), workers=2)
    for item, _ in gen:
        if item == 3:
            break
    gen.close()
    assert time.monotonic() - start < 2.0  # queued work was cancelled, not run to completion
    deadline = time.monotonic() + 2.0
    while _decode_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _decode_threads()
