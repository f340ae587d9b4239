"""Reading text in pictures during an `index` run (``--ocr``), beside CLIP encoding.

The decode threads hand each decoded picture (already drafted to a size OCR can use) to one
reader thread through a bounded queue, so OCR runs while the main thread encodes the next CLIP
batch, no file is decoded twice, and memory holds a few pictures at most. Results are written
once their picture's row is committed, each in a transaction that also marks the picture read
(`clipdex.index.store.texts`): a killed run resumes with the pictures it had not read, which the
catch-up pass (`catch_up`) reads, as it reads pictures indexed before OCR was turned on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from clipdex.index.scan import is_under
from clipdex.index.store.texts import TextRead
from clipdex.inputs.paths import display_path
from clipdex.results import TextLine

if TYPE_CHECKING:
    from clipdex.index.store.database import Store
    from clipdex.retrieval.ocr import TextReader

OCR_KEY = "ocr"  # meta: "on" when the library reads the text in its pictures (index --ocr)
QUEUE = 8  # decoded pictures waiting for the reader (each at most READ_SIDE long: ~8 MB)
WRITE_EVERY = 16  # read pictures per transaction in the catch-up pass
_STOP = object()

Problem = Callable[[str, str], None]


class TextReading:
    """One run's OCR: a reader thread fed by the decode threads, and the writes of its results."""

    @classmethod
    def for_run(cls, store: Store, ocr: bool | None, problem: Problem | None) -> TextReading | None:
        """The reading of an `index` run: ``ocr`` True/False turns it on or off for good (remembered
        once the reader could be made), None does as the library remembers."""
        from clipdex.retrieval.ocr import TextReader

        on = ocr if ocr is not None else store.meta.get(OCR_KEY) == "on"
        reading = cls(store, TextReader(), problem or (lambda path, reason: None)) if on else None
        if ocr is not None:
            with store.transaction():
                store.meta.set(OCR_KEY, "on" if ocr else "off")
        return reading

    def __init__(self, store: Store, reader: TextReader, problem: Problem):
        self.store, self.reader, self.problem = store, reader, problem
        self.read = 0  # pictures read (with or without text)
        self.failed = 0
        self._queue: queue.Queue = queue.Queue(QUEUE)
        self._done: dict[bytes, list[TextLine] | BaseException] = {}
        self._ids: dict[bytes, int] = {}  # committed pictures whose text is still being read
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---- the reader thread ----------------------------------------------------------------
    def submit(self, path: bytes, picture: Any) -> None:
        """From a decode thread: queue ``picture`` for reading (blocks while the queue is full)."""
        from clipdex.retrieval.ocr import prepare

        if self._stopping:
            return
        rgb = prepare(picture)  # the resize is this thread's work, not the reader's
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="clipdex-ocr", daemon=True)
                self._thread.start()
        while not self._stopping:  # never blocked for good: a failed run stops the reader
            try:
                self._queue.put((path, rgb), timeout=0.5)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        while (job := self._queue.get()) is not _STOP:
            path, rgb = job
            if self._stopping:
                continue  # the run failed: drain the queue so no decode thread stays blocked
            try:
                result: list[TextLine] | BaseException = self.reader.read(rgb)
            except Exception as e:  # a picture RapidOCR chokes on must not stop the run
                result = e
            with self._lock:
                self._done[path] = result

    # ---- writes ---------------------------------------------------------------------------
    def committed(self, ids: dict[bytes, int]) -> None:
        """Pictures whose rows were just committed (path -> id); write the results ready now."""
        self._ids.update(ids)
        self._write_ready()

    def finish(self) -> None:
        """Wait for the reader and write everything it read."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._write_ready()

    def abandon(self) -> None:
        """The run failed: let the reader drain and stop without reading more."""
        self._stopping = True
        if self._thread is not None:
            self._queue.put(_STOP)

    def _write_ready(self) -> None:
        with self._lock:
            ready = {p: r for p, r in self._done.items() if p in self._ids}
            for p in ready:
                del self._done[p]
        if ready:
            self._write([(self._ids.pop(p), p, r) for p, r in ready.items()])

    def _write(self, results: Sequence[tuple[int, bytes, list[TextLine] | BaseException]]) -> None:
        reads = []
        for item_id, path, result in results:
            self.read += 1
            if isinstance(result, BaseException):
                self.failed += 1
                reason = str(result) or type(result).__name__
                self.problem(display_path(path), f"could not read its text: {reason}")
                reads.append(TextRead(item_id, error=reason))
            else:
                reads.append(TextRead(item_id, tuple(result)))
        self.store.texts.write(reads)

    # ---- pictures indexed before, or left unread by a killed run -----------------------------
    def catch_up(
        self, roots: Sequence[bytes], skip: set[bytes], workers: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:  # fmt: skip
        """Read the pictures under ``roots`` that OCR has not read yet (decoding each once)."""
        from clipdex.retrieval.decode import open_image
        from clipdex.retrieval.ocr import OCR_DRAFT, prepare
        from clipdex.retrieval.prefetch import ordered_prefetch

        todo = [(i, p) for i, p in self.store.texts.unread_images() if p not in skip and is_under(p, roots)]
        if not todo:
            return
        if progress:
            progress(0, len(todo))
        batch: list[tuple[int, bytes, list[TextLine] | BaseException]] = []
        decoded = ordered_prefetch(lambda t: prepare(open_image(t[1], OCR_DRAFT)), todo, workers, ahead=QUEUE)
        for n, ((item_id, path), rgb) in enumerate(decoded, start=1):
            if isinstance(rgb, BaseException):
                result: list[TextLine] | BaseException = rgb
            else:
                try:
                    result = self.reader.read(rgb)
                except Exception as e:
                    result = e
            batch.append((item_id, path, result))
            if len(batch) >= WRITE_EVERY:
                self._write(batch)
                batch = []
            if progress:
                progress(n, len(todo))
        if batch:
            self._write(batch)
