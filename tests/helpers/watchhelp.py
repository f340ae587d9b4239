"""Running `Library.watch` on a thread for a test, and waiting for what it should do."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from clipdex.library import Library


@dataclass
class Watching:
    lib: Library
    batches: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)


def wait_for(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def watching(lib_dir: Path, folders: list, model: str | None = None, **options) -> Iterator[Watching]:
    """Watch ``folders`` on a thread until the block ends (the first pass applied on entry)."""
    w = Watching(None)  # type: ignore[arg-type]
    lib = Library.open(lib_dir, create=True, model=model, notice=w.notices.append)
    w.lib = lib
    ready = threading.Event()

    def target() -> None:
        try:
            lib.watch(folders, on_batch=lambda b: w.batches.append(b.to_dict()), on_ready=ready.set,
                      problem=lambda p, r: w.problems.append((p, r)), **options)  # fmt: skip
        except BaseException as e:  # surfaced by the test
            w.error.append(e)
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "the first pass did not finish"
        assert not w.error, w.error
        yield w
    finally:
        lib.stop()
        thread.join(15)
        lib.close()
    assert not thread.is_alive(), "watch did not stop"
    assert not w.error, w.error


def image_paths(lib_dir: Path) -> list[bytes]:
    """Every image path in the library, with repeats (a duplicate would show twice)."""
    from clipdex.index.store.database import Store

    store = Store(lib_dir)
    try:
        return [bytes(p) for (p,) in store.conn.execute("SELECT path FROM items WHERE kind = 'image'")]
    finally:
        store.close()


def path_ids(lib_dir: Path) -> dict[bytes, int]:
    from clipdex.index.store.database import Store

    store = Store(lib_dir)
    try:
        rows = store.conn.execute("SELECT path, id FROM items WHERE kind = 'image'")
        return {bytes(p): i for p, i in rows}
    finally:
        store.close()
