"""Text-query batching of `clipdex serve`: concurrent queries share forward passes, answers stay right."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from clipdex.serve.batching import TextBatcher


def embed(texts):
    """A deterministic stand-in for a text tower (this tests the queueing, not the model)."""
    return np.array([[len(t), sum(map(ord, t))] for t in texts], np.float32)


def test_queries_arriving_during_a_pass_share_the_next_one():
    calls: list[list[str]] = []
    lock = threading.Lock()
    batcher: TextBatcher

    def encode_many(texts):
        calls.append(list(texts))
        if len(calls) == 1:  # hold the first pass until the other seven have queued behind it
            deadline = time.monotonic() + 30
            while batcher.queued() < 7 and time.monotonic() < deadline:
                time.sleep(0.005)
        return embed(texts)

    batcher = TextBatcher(encode_many, lock)
    texts = [f"query number {i}" * (i + 1) for i in range(8)]
    out: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        out[i] = batcher.encode(texts[i])

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    while not calls:
        time.sleep(0.001)
    others = [threading.Thread(target=ask, args=(i,)) for i in range(1, 8)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(60)
    assert [len(c) for c in calls] == [1, 7]
    for i, text in enumerate(texts):
        assert np.array_equal(out[i], embed([text])[0])


def test_a_failure_reaches_every_waiter_of_its_batch_and_the_next_pass_works():
    lock = threading.Lock()
    fail = {"on": True}

    def encode_many(texts):
        if fail["on"]:
            raise RuntimeError("model broke")
        return embed(texts)

    batcher = TextBatcher(encode_many, lock)
    with pytest.raises(RuntimeError, match="model broke"):
        batcher.encode("x")
    fail["on"] = False
    assert np.array_equal(batcher.encode("abc"), embed(["abc"])[0])
    assert batcher.queued() == 0


def test_batches_are_capped():
    lock = threading.Lock()
    sizes: list[int] = []
    batcher = TextBatcher(lambda t: sizes.append(len(t)) or embed(t), lock, max_batch=3)
    with lock:  # hold the model: ten queries queue up
        threads = [threading.Thread(target=batcher.encode, args=(f"q{i}",)) for i in range(10)]
        for t in threads:
            t.start()
        while batcher.queued() < 10:
            time.sleep(0.001)
    for t in threads:
        t.join(30)
    assert sum(sizes) == 10 and max(sizes) == 3
