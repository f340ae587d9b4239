"""`Library.watch`: follow folders and apply what changes in them, batch by batch, as `index` would.

File-system events come from watchfiles (notify: inotify, FSEvents, ReadDirectoryChangesW) on a
thread of their own; this loop turns them into pending paths (`Pending`: a file is taken once its
size and mtime held for the debounce), and applies the ready ones through the same `IndexRun` as
`index` (its plan, restricted to the batch's paths; its writes). A batch is planned and encoded
without the writer lock and committed in one transaction under it, so other writers wait at most
one commit. Events the OS lost (an error of the watcher, a folder that vanished and returned, or
anything a periodic rescan finds) are made good by a stat-only rescan feeding the same queue.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipdex.errors import ClipdexError, LockHeld
from clipdex.index.scan import check_folders, is_under, scan, scan_roots
from clipdex.index.scan_paths import CAPTION, IMAGE, PathRules
from clipdex.index.store.lock import WriterLock
from clipdex.inputs.paths import display_path
from clipdex.kinds import IMAGE as IMAGE_KIND
from clipdex.kinds import TEXT as TEXT_KIND
from clipdex.library.indexing import IndexRun
from clipdex.library.watch_events import Events
from clipdex.library.watch_pending import Pending
from clipdex.results import WatchBatch

if TYPE_CHECKING:
    from clipdex.library.parts import Parts

log = logging.getLogger("clipdex")

TICK = 0.2  # seconds between readiness checks while something is pending
FOLD_ITEMS = 2000  # fold the change log into the FAISS files after this many changed items…
FOLD_SECONDS = 300.0  # …or this long after the first change since the last fold
LOCK_WAIT = 0.5  # one attempt at the writer lock; a busy lock is retried, the batch kept


@dataclass
class WatchOptions:
    debounce: float = 1.0
    include_hidden: bool = False
    batch_size: int = 32  # images encoded and committed per batch, at most
    workers: int | None = None
    exact_decode: bool = False
    rescan_every: float = 3600.0  # a stat-only rescan this often (0: never), for events lost silently


class Watcher:
    """Follows ``folders`` until ``stop`` is set; see the module docstring."""

    def __init__(
        self, parts: Parts, folders: Sequence[str | bytes | os.PathLike], options: WatchOptions,
        stop: threading.Event, on_batch: Callable[[WatchBatch], None] | None = None,
        problem: Callable[[str, str], None] | None = None, notice: Callable[[str], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ):  # fmt: skip
        folders = [os.path.expanduser(f) if isinstance(f, str) else f for f in folders]
        check_folders(folders)  # a missing FOLDER: exit 1, nothing touched
        self.parts, self.store, self.options, self.stop = parts, parts.store, options, stop
        self.roots = scan_roots(folders)
        self.on_batch = on_batch or (lambda batch: None)
        self.problem = problem or (lambda path, reason: None)
        self.notice = notice or log.info
        self.on_ready = on_ready
        self.rules = PathRules(self.roots, options.include_hidden, exclude=[parts.path])
        self.pending = Pending(options.debounce)
        self._encoder: Any = None
        self._model_key: tuple | None = None
        self._changed, self._first_change = 0, 0.0  # items changed since the FAISS files were folded
        self._missing: set[bytes] = set()  # roots gone (waited for)
        self._last_rescan = time.monotonic()
        self._said_lock = False
        self._said_failure: str | None = None
        self._batch: _Batch | None = None  # planned and encoded, waiting for the lock
        self._reading: Any = None  # the OCR reader, made once if the library reads text

    def _text_reading(self) -> Any:
        """The library's OCR setting, as `index` follows it (read again each batch)."""
        from clipdex.library.reading import OCR_KEY, TextReading

        if self.store.meta.get(OCR_KEY) != "on":
            return None
        if self._reading is None:
            self._reading = TextReading.for_run(self.store, None, self.problem)
        return self._reading

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        self._prepare()
        events = self._restart(None, list(self.roots))  # listening before the first pass looks
        self.rescan(self.roots, quiet=True)  # the first pass: what changed while nobody watched
        ready_said = False
        try:
            while not self.stop.is_set():
                present = [r for r in self.roots if r not in self._missing]
                if events is None or events.failed or events.roots != present:
                    events = self._restart(events, present)
                self._drain(events)
                if self.stop.is_set():
                    break
                self._apply_ready()
                self._check_roots()
                if not ready_said and not len(self.pending):
                    ready_said = True
                    if self.on_ready:
                        self.on_ready()
                every = self.options.rescan_every
                if every and time.monotonic() - self._last_rescan >= every:
                    self.rescan([r for r in self.roots if r not in self._missing])
                if self._fold_due():
                    self._fold()
        finally:
            if events is not None:
                events.close()
            if self._changed:
                self._fold(wait=True)

    def _restart(self, events: Events | None, present: list[bytes]) -> Events:
        """A new event thread for ``present``, started before the old one stops (nothing heard
        in between is lost); after a failure of the old one, a rescan makes good what it lost."""
        backoff = 1.0
        if events is not None and events.failed:
            if events.failed != self._said_failure:
                self._said_failure = events.failed
                self.notice(f"file events were lost ({events.failed}); rescanning")
            if events.short_lived:  # it fails at once again: wait longer each time
                backoff = min(60.0, events.backoff * 2)
                self.stop.wait(events.backoff)
        fresh = Events(present, self.stop, backoff)
        if events is not None:
            events.close()
            self._drain(events, wait=False)
            if events.failed:
                self.rescan(present, quiet=True)
        return fresh

    def _drain(self, events: Events, wait: bool = True) -> None:
        """Hear what the event thread queued; wait up to a tick when nothing is ready to apply."""
        timeout = TICK if len(self.pending) else 1.0
        try:
            changes = events.queue.get(timeout=timeout) if wait else events.queue.get_nowait()
        except queue.Empty:
            return
        while True:
            if changes is not None:
                self._hear(changes)
            try:
                changes = events.queue.get_nowait()
            except queue.Empty:
                return

    def _hear(self, changes: set[tuple[Any, str]]) -> None:
        now = time.monotonic()
        for change, raw in changes:
            path = os.fsencode(raw)
            if not self.rules.admits(path):
                continue
            if int(change) == 3:  # watchfiles.Change.deleted (also a rename's old half)
                if self.rules.kind(path) == CAPTION:
                    self._touch_caption(path, now)
                else:
                    self.pending.lose(path, now)
                continue
            self._heard(path, now)
        self.rules.forget()

    def _heard(self, path: bytes, now: float) -> None:
        """A path was created or written: a folder is walked (its files were maybe never heard of)."""
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                for s in scan([path], include_hidden=self.options.include_hidden, exclude=[self.parts.path],
                              on_error=self.problem_bytes, videos=True):  # fmt: skip
                    self.pending.touch(s.image.path, now, s.image)
            except ClipdexError:
                pass  # gone again since: its deletion is heard too
            return
        kind = self.rules.kind(path)
        if kind == IMAGE:
            self.pending.touch(path, now)
        elif kind == CAPTION:
            self._touch_caption(path, now)

    def _touch_caption(self, txt: bytes, now: float) -> None:
        # A sidecar's images are taken again (with the caption as it is then), once the .txt held.
        if not self.pending.touch(txt, now):
            self.pending.gone.pop(txt, None)  # a deleted .txt is not an absence of an image
            for image in self.rules.images_of_caption(txt):
                self.pending.touch(image, now)

    def problem_bytes(self, path: bytes, reason: str) -> None:
        self.problem(display_path(path), reason)

    # ---- folders that vanish ----------------------------------------------------------------
    def _check_roots(self) -> None:
        for root in self.roots:
            here = os.path.isdir(root)
            if not here and root not in self._missing:
                self._missing.add(root)
                self.notice(f"watched folder {display_path(root)} is gone; waiting for it to come back "
                            "(its pictures stay in the library)")  # fmt: skip
            elif here and root in self._missing:
                self._missing.discard(root)
                self.notice(f"watched folder {display_path(root)} is back; rescanning it")
                self.rescan([root], quiet=True)

    def rescan(self, roots: list[bytes], quiet: bool = False) -> None:
        """Compare ``roots`` with the store (stat only, as `index` does) and queue the differences."""
        self._last_rescan = time.monotonic()
        if not roots:
            return
        run = IndexRun(self.store, self._encoder_for, problem=self.problem)
        found = scan(roots, include_hidden=self.options.include_hidden, exclude=[self.parts.path],
                     on_error=self.problem_bytes, videos=True)  # fmt: skip
        in_scope = lambda p: is_under(p, roots)  # noqa: E731
        plan = run.plan(found, in_scope)
        now, before = time.monotonic(), len(self.pending)
        for t in plan.todo:
            self.pending.touch(t.scanned.image.path, now, t.scanned.image)
        for rec, s in plan.moves:
            self.pending.touch(s.image.path, now, s.image)
            old = self.store.items.record(rec.id)
            if old is not None and old["path"] is not None:
                self.pending.lose(old["path"], now)
        for _, s in plan.caption_fixes:
            self.pending.touch(s.image.path, now, s.image)
        for path in plan.gone:
            self.pending.lose(path, now)
        if run.videos is not None:  # new or changed videos, and those gone (a move pairs in its batch)
            for v, _ in run.videos.plan.todo:
                self.pending.touch(v.image.path, now, v.image)
            for path in run.videos.vanished(in_scope):
                self.pending.lose(path, now)
        found_now = len(self.pending) - before
        if found_now and not quiet:
            self.notice(f"a rescan found {found_now} changes that file events missed; applying them")

    # ---- batches ----------------------------------------------------------------------------
    def _apply_ready(self) -> None:
        if self._batch is None:
            self._batch = self._next_batch(time.monotonic())
        if self._batch is None:
            return
        batch = self._batch
        committed = self._commit(batch)
        if committed is None:
            return  # the lock is busy: the encoded batch is kept and tried again
        self._batch = None
        if not committed:
            return  # another writer changed these paths meanwhile: planned again next time
        self.pending.done(batch.done, batch.gone)
        s = batch.run.stats
        counts = WatchBatch(s.added, s.updated, s.moved, s.removed, s.failed, s.texts_added,
                            s.texts_updated, s.texts_removed)  # fmt: skip
        if counts.any():
            self._changed += counts.items()
            self._first_change = self._first_change or time.monotonic()
            self.on_batch(counts)

    def _next_batch(self, now: float) -> _Batch | None:
        """Plan the ready files and absences (stat only) and encode their pictures, no lock held."""
        files, gone = self.pending.ready(now)
        gone = [g for g in gone if not any(is_under(g, [r]) for r in self._missing)]  # an unmounted disk
        for path in [g for g in gone if os.path.lexists(g)]:  # deleted, then back: taken as it is now
            self.pending.gone.pop(path, None)
            self._heard(path, now)
            gone.remove(path)
        if not files and not gone:
            return None
        if not gone:
            files = files[: self.options.batch_size]
        images: dict[bytes, None] = {}
        for path in files:
            if self.rules.kind(path) == CAPTION:
                images.update(dict.fromkeys(i for i in self.rules.images_of_caption(path)
                                            if not self.pending.waiting(i, now)))  # fmt: skip
            else:
                images[path] = None
        run = IndexRun(self.store, self._encoder_for, batch_size=self.options.batch_size,
                       workers=self.options.workers, exact_decode=self.options.exact_decode,
                       problem=self.problem, reading=self._text_reading())  # fmt: skip
        scanned, again = [], set()
        for path in images:
            s = self.rules.scanned(path, run._bad_file) if self.rules.admits(path) else None
            held = self.pending.stable_stat(path)
            if s is not None and held is not None and held != (s.image.size, s.image.mtime_ns):
                again.add(path)  # written again since it was found ready: it waits again
                self.pending.touch(path, now, s.image)
            elif s is not None:
                scanned.append(s)
        self.rules.forget()
        paths = [s.image.path for s in scanned]
        taken = set(paths)
        waiting = {p for p in self.pending.files if p not in taken}

        def in_scope(p: bytes) -> bool:
            return p in taken or (is_under(p, gone) and p not in waiting)

        scope = self._scope(paths, gone)
        if run.videos is not None:
            run.videos.limit(paths, gone)
        plan = run.plan(scanned, in_scope, scope[0], scope[1])
        again |= {t.scanned.image.path for t in plan.todo[self.options.batch_size :]}  # the rest: next time
        plan.todo = plan.todo[: self.options.batch_size]
        encoded = list(run.encode(plan.todo))
        done = [p for p in files if p not in again]
        return _Batch(run, plan, encoded, paths, gone, scope, done)

    def _scope(self, paths: list[bytes], gone: list[bytes]) -> tuple:
        """The store's records of a batch's paths and the folders it lost (and their captions)."""
        known = self.store.items.image_files(paths, gone)
        failures = self.store.failures.all(paths, gone)
        return known, failures, self.store.items.sidecars([r.id for r in known.values()])

    def _commit(self, batch: _Batch) -> bool | None:
        """One transaction under the writer lock. None: the lock is busy; False: another writer
        changed these paths since they were planned (nothing written)."""
        try:
            lock = WriterLock(self.parts.path, timeout=LOCK_WAIT)
            lock.acquire()
        except LockHeld as e:
            if not self._said_lock:
                self._said_lock = True
                self.notice(f"waiting: {e}")
            return None
        self._said_lock = False
        try:
            self.store.make_writable()
            self._check_model()
            with self.store.transaction():  # checked inside: no other commit can come in between
                if self._scope(batch.paths, batch.gone) != batch.scope:
                    return False  # nothing written
                for _ in batch.run.execute(batch.plan, iter(batch.encoded)):
                    pass  # the FAISS files follow from the change log (see _fold)
        finally:
            lock.release()
        return True

    # ---- model and FAISS files --------------------------------------------------------------
    def _prepare(self) -> None:
        """Under the lock once: check the model (record it in a new library), get the encoder."""
        models = self.parts.models
        with self.parts.writing():
            models.check(False)
            if models.stored is None:
                models.for_writing(False)
            self._encoder = models.writer_encoder()
            self._model_key = (models.stored, models.precision)

    def _encoder_for(self, sample: Any = None) -> Any:
        return self._encoder

    def _check_model(self) -> None:
        models = self.parts.models
        if (models.stored, models.precision) != self._model_key:
            raise ClipdexError(
                f"the library's model changed to {models.stored} ({models.precision}) while watching; "
                "start `clipdex watch` again"
            )

    def _fold_due(self) -> bool:
        if not self._changed:
            return False
        missing = not self.parts.indexes.path(IMAGE_KIND).exists()
        return missing or self._changed >= FOLD_ITEMS or time.monotonic() - self._first_change >= FOLD_SECONDS

    def _fold(self, wait: bool = False) -> None:
        """Fold the change log into the FAISS files (readers then load them instead of catching up),
        and drop them from memory: a watcher keeps no index loaded."""
        indexes = self.parts.indexes
        try:
            with WriterLock(self.parts.path, timeout=None if wait else LOCK_WAIT):
                self.store.make_writable()
                for kind in (IMAGE_KIND, TEXT_KIND):
                    if indexes.path(kind).exists() or self.store.items.count(kind):
                        indexes.get(kind)
                indexes.save_all()
        except LockHeld:
            return  # another writer is at it: later
        finally:
            indexes.forget()
        self._changed, self._first_change = 0, 0.0


@dataclass
class _Batch:
    """A planned and encoded batch, waiting for its commit."""

    run: IndexRun
    plan: Any
    encoded: list
    paths: list[bytes]
    gone: list[bytes]
    scope: tuple
    done: list[bytes]  # the pending paths it settles
