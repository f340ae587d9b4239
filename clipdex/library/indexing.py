"""One `index` run: scan → decode → encode → store, committed in batches.

Joins `index/` (files, SQLite, FAISS) and `retrieval/` (model, tensors); the Library drives it.
Identity is stable: a changed file is updated in place (same id), a file moved within this run's
FOLDERs is recognised by size + content hash and keeps its id, vector and captions, and a file that
failed to decode is remembered and not retried until it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from clipdex.index.scan import FileStat, ScannedImage, content_hash, is_under, scan, scan_roots
from clipdex.index.store.database import Store
from clipdex.index.store.rows import Caption, FileRecord, PhotoMeta
from clipdex.inputs.paths import display_path
from clipdex.inputs.sidecars import SidecarError, read_sidecar
from clipdex.kinds import IMAGE, TEXT
from clipdex.library.change import Change
from clipdex.library.index_plan import Plan, Todo, find_moves, sidecar_changed
from clipdex.library.reading import TextReading
from clipdex.results import IndexStats
from clipdex.retrieval.prefetch import default_workers

if TYPE_CHECKING:
    from clipdex.library.parts import Parts
    from clipdex.retrieval.encoders import Encoder

# The encoder a run writes with, given where to sample pictures from (for an int8 export's figures).
EncoderFor = Callable[[Callable[[], list[bytes]] | None], "Encoder"]

Problem = Callable[[str, str], None]  # (display path, reason) -> report it on stderr
Batches = Iterator[tuple[list, list, int]]  # (encoded, failed, done) per encoder batch


@dataclass(slots=True)
class _CaptionPlan:
    insert: list[tuple[int, FileStat, str]] = field(default_factory=list)  # (image id, .txt, text)
    update: list[tuple[int, FileStat, str]] = field(default_factory=list)  # (caption id, .txt, text)
    facts: list[tuple[int, FileStat]] = field(default_factory=list)  # same text: new stat only
    delete: list[int] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.insert or self.update or self.facts or self.delete)


class IndexRun:
    """Brings the store in line with FOLDERs; yields one Change per committed batch.

    ``encoder`` is a getter: a run with nothing new to embed never loads the model (nor a runtime).
    """

    def __init__(
        self,
        store: Store,
        encoder: EncoderFor,
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        exact_decode: bool = False,
        retry_failed: bool = False,
        problem: Problem | None = None,
        progress: Callable[[int, int], None] | None = None,
        before_write: Callable[[], None] | None = None,
        reading: TextReading | None = None,
        videos: bool = True,
        video_interval: float | None = None,
        video_progress: Callable[[int, int], None] | None = None,
    ):
        from clipdex.library.video_indexing import VideoIndexing

        self.store, self._encoder = store, encoder
        # --no-video: videos are neither scanned nor removed (those indexed before stay as they are)
        self.videos = VideoIndexing(self, video_interval or 2.0, video_progress) if videos else None
        self.reading = reading  # --ocr: the text in the pictures is read beside the encoding
        self._before_write = before_write  # called once, before the first commit
        self.batch_size = max(1, batch_size) if batch_size else None  # None: by device, see embed
        self.workers = workers or default_workers()
        self.exact_decode = exact_decode
        self.retry_failed = retry_failed
        self.problem = problem or (lambda path, reason: None)
        self.progress = progress
        self.stats = IndexStats()
        self.failed_now: set[bytes] = set()  # paths that failed to decode in this run
        self._photos: dict[bytes, PhotoMeta] = {}  # path -> date and size, from the decode threads
        self._ids: list[int] = []  # the ids of the last batch stored, in its order

    def run(
        self, folders: Sequence[str | bytes], include_hidden: bool, exclude: Sequence
    ) -> Iterator[Change]:
        roots = scan_roots(folders)
        found = scan(
            folders, include_hidden=include_hidden, exclude=exclude, on_error=self._scan_error,
            on_bad_file=self._bad_file, videos=self.videos is not None,
        )  # fmt: skip
        yield from self.execute(self.plan(found, lambda p: is_under(p, roots)))
        if self.reading is not None:  # pictures indexed before --ocr, or left unread by a killed run
            self.reading.catch_up(roots, self.failed_now, self.workers)
            self.stats.ocr_read, self.stats.ocr_failed = self.reading.read, self.reading.failed

    def plan(
        self, found: Iterable[ScannedImage], in_scope: Callable[[bytes], bool],
        known: dict[bytes, FileRecord] | None = None, failures: dict | None = None,
    ) -> Plan:  # fmt: skip
        """What bringing the store in line with the files ``found`` takes (reads only, no model).

        Scanned items under ``in_scope`` that were not found are gone (or moved to a new path
        found). ``known``/``failures``: the store's records of the paths in scope (default all).
        """
        failures = self.store.failures.all() if failures is None else failures
        captions = self.store.items.sidecars(None if known is None else [r.id for r in known.values()])
        known = self.store.items.image_files() if known is None else known
        seen: set[bytes] = set()
        plan = Plan(captions=captions, failures=failures)
        for s in found:
            f = s.image
            seen.add(f.path)
            if s.video:  # a video is indexed whole, apart (clipdex.library.video_indexing)
                if self.videos is not None:
                    self.videos.consider(s, failures)
                continue
            old = known.get(f.path)
            if old is not None and old.mtime_ns == f.mtime_ns and old.size == f.size:
                self.stats.unchanged += 1
                if sidecar_changed(captions.get(old.id), s.sidecar):
                    plan.caption_fixes.append((old.id, s))
            elif not self.retry_failed and failures.get(f.path) == (f.size, f.mtime_ns):
                self.stats.skipped_failed += 1
            else:
                plan.todo.append(Todo(s, old))
        # Only after a complete scan: scanned files gone from under this run's FOLDERs (imported
        # items are never removed). Some of them may have moved to a new path seen above.
        plan.gone = {p: r for p, r in known.items() if r.source == "scan" and p not in seen and in_scope(p)}
        plan.todo, plan.moves = find_moves(plan.todo, plan.gone)
        plan.forget = [p for p in failures if p not in seen and in_scope(p)]
        plan.in_scope = in_scope
        return plan

    def execute(self, plan: Plan, batches: Batches | None = None) -> Iterator[Change]:
        """Write ``plan``: moves, then the images of ``plan.todo`` (encoded now, or ``batches``
        encoded before), captions, removals; one Change per commit."""
        captions = plan.captions
        if plan.moves:
            self._move(plan.moves, captions, plan.caption_fixes)
        if self.progress:
            self.progress(0, len(plan.todo))
        yield from self._store_images_of(plan.todo, captions, batches)
        yield from self._fix_captions(plan.caption_fixes, captions)
        if self.videos is not None and plan.in_scope is not None:
            yield from self.videos.apply(plan.in_scope, plan.failures)
        # Failures to forget: files gone from under FOLDERs, and those that decoded this time.
        forget = plan.forget + [
            t.scanned.image.path for t in plan.todo if t.scanned.image.path in plan.failures
        ]
        forget = [p for p in forget if p not in self.failed_now]
        if plan.gone:
            self.stats.removed += len(plan.gone)
            self.stats.texts_removed += sum(1 for r in plan.gone.values() if r.id in captions)
            self.first_write()
            yield Change(removed=self.store_delete([r.id for r in plan.gone.values()]))
        if forget:
            self.store.failures.forget(forget)

    def encode(self, todo: list[Todo]) -> Batches:
        """Decode and encode ``todo``'s files: ``(encoded, failed, done)`` per encoder batch."""
        if not todo:
            return iter(())
        enc = self.encoder(lambda: [t.scanned.image.path for t in todo])  # the model: only now
        reading, draft = self.reading, None if self.exact_decode else enc.image_size
        if reading is not None and draft is not None:  # one decode serves CLIP and OCR
            from clipdex.retrieval.ocr import OCR_DRAFT

            draft = (max(draft[0], OCR_DRAFT[0]), max(draft[1], OCR_DRAFT[1]))
        return enc.embed_files(
            todo, lambda t: t.scanned.image.path, batch_size=self.batch_size or enc.default_batch_size(),
            workers=self.workers, draft_to=draft, on_info=self._remember_photo,
            on_image=(lambda t, picture: reading.submit(t.scanned.image.path, picture)) if reading else None,
        )  # fmt: skip

    def encoder(self, sample: Callable[[], list[bytes]] | None = None) -> Encoder:
        return self._encoder(sample)

    # ---- moves ----------------------------------------------------------------------------
    def _move(self, moves: list[tuple[FileRecord, ScannedImage]], captions: dict, fixes: list) -> None:
        """Moved files keep id and vector: only their path and stat change (no re-encoding)."""
        self.first_write()
        self.store.items.update_files(
            [rec.id for rec, _ in moves], paths=[s.image.path for _, s in moves],
            stats=[(s.image.mtime_ns, s.image.size) for _, s in moves],
        )  # fmt: skip
        self.stats.moved += len(moves)
        for rec, s in moves:
            if sidecar_changed(captions.get(rec.id), s.sidecar):
                fixes.append((rec.id, s))

    # ---- images ---------------------------------------------------------------------------
    def _store_images_of(self, todo: list[Todo], captions: dict, batches: Batches | None) -> Iterator[Change]:
        if not todo:
            return
        try:
            yield from self._store_batches(todo, captions, self.encode(todo) if batches is None else batches)
        except BaseException:
            if self.reading is not None:
                self.reading.abandon()
            raise
        if self.reading is not None:
            self.reading.finish()

    def _store_batches(self, todo: list[Todo], captions: dict, batches: Batches) -> Iterator[Change]:
        for encoded, failed, done in batches:
            failed_old, failures = [], []
            for t, error in failed:
                f, reason = t.scanned.image, str(error) or type(error).__name__
                self.stats.failed += 1
                self.problem(display_path(f.path), reason)
                failures.append((f.path, f.size, f.mtime_ns, reason))
                self.failed_now.add(f.path)
                if t.old is not None and t.old.source == "scan":  # its vector describes content that is gone
                    failed_old.append(t.old.id)
            if failures:
                self.store.failures.record(failures)
            if encoded or failed_old:
                yield self._store_images(encoded, captions, failed_old)
                if self.reading is not None:
                    self.reading.committed({t.scanned.image.path: i for (t, _), i in zip(encoded, self._ids)})
            if self.progress:
                self.progress(done, len(todo))

    def _remember_photo(self, todo: Todo, info: tuple) -> None:
        self._photos[todo.scanned.image.path] = PhotoMeta(*info)

    def _store_images(
        self, batch: list[tuple[Todo, np.ndarray]], captions: dict, failed_old: list[int]
    ) -> Change:
        """One transaction: new images inserted, changed ones updated in place, captions synced."""
        store = self.store
        files = [t.scanned.image for t, _ in batch]
        hashes = [content_hash(f.path, f.size) for f in files]
        new = [n for n, (t, _) in enumerate(batch) if t.old is None]
        upd = [n for n, (t, _) in enumerate(batch) if t.old is not None]
        vecs = np.stack([v for _, v in batch]) if batch else None
        photos = [self._photos.pop(f.path, None) for f in files]
        self.stats.added += len(new)
        self.stats.updated += len(upd)
        self.stats.texts_removed += sum(1 for i in failed_old if i in captions)
        self.first_write()
        change = Change()
        with store.transaction():
            change.removed += self.store_delete(failed_old)
            new_ids = store.items.insert(
                IMAGE, "scan", vecs[new], paths=[files[n].path for n in new],
                stats=[(files[n].mtime_ns, files[n].size) for n in new], photos=[photos[n] for n in new],
            ) if new else []  # fmt: skip
            if new:
                store.items.update_files(new_ids, hashes=[hashes[n] for n in new])
            upd_ids = [batch[n][0].old.id for n in upd]
            if upd:
                store.items.update_vectors(
                    upd_ids, vecs[upd], paths=[files[n].path for n in upd],
                    stats=[(files[n].mtime_ns, files[n].size) for n in upd], hashes=[hashes[n] for n in upd],
                    photos=[photos[n] for n in upd], source="scan",
                )  # fmt: skip
                change.removed += upd_ids
            ids = dict(zip(new, new_ids)) | dict(zip(upd, upd_ids))
            self._ids = [ids[n] for n in range(len(batch))]
            store.texts.forget(upd_ids)  # text read in the old content is stale
            if batch:
                change.add(IMAGE, [ids[n] for n in range(len(batch))], vecs)
            plan = self._plan_captions([(ids[n], t.scanned) for n, (t, _) in enumerate(batch)], captions)
            self._apply_captions(plan, change)
        return change

    # ---- captions -------------------------------------------------------------------------
    def _fix_captions(self, fixes: list[tuple[int, ScannedImage]], captions: dict) -> Iterator[Change]:
        """Captions of unchanged (or moved) images whose sidecar appeared, changed or went away."""
        for start in range(0, len(fixes), 256):
            plan = self._plan_captions(fixes[start : start + 256], captions)
            if not plan.any():
                continue  # e.g. an empty sidecar: no caption then, none now; nothing to write
            change = Change()
            self.first_write()
            with self.store.transaction():
                self._apply_captions(plan, change)
            if change.added or change.removed:
                yield change

    def _plan_captions(
        self, images: list[tuple[int, ScannedImage]], captions: dict[int, Caption]
    ) -> _CaptionPlan:
        """What each image's sidecar caption needs, given its .txt now (counted in the stats)."""
        plan = _CaptionPlan()
        for image_id, s in images:
            had = captions.get(image_id)
            text = self._read_sidecar(s.sidecar) if s.sidecar else None
            if had is None and text:
                plan.insert.append((image_id, s.sidecar, text))
                self.stats.texts_added += 1
            elif had is not None and not text:
                plan.delete.append(had.id)
                self.stats.texts_removed += 1
            elif had is not None and text == had.text:
                plan.facts.append((had.id, s.sidecar))
            elif had is not None:
                plan.update.append((had.id, s.sidecar, text))
                self.stats.texts_updated += 1
        return plan

    def _apply_captions(self, plan: _CaptionPlan, change: Change) -> None:
        """Write a caption plan (inside the caller's transaction).

        Same text (a touched or moved .txt): only the file facts change, nothing is re-encoded.
        Another text: the caption keeps its id and gets a new vector. Only new texts load the model.
        """
        store = self.store
        if plan.facts:
            store.items.update_files([i for i, _ in plan.facts], paths=[sc.path for _, sc in plan.facts],
                               stats=[(sc.mtime_ns, sc.size) for _, sc in plan.facts])  # fmt: skip
        change.removed += self.store_delete(plan.delete)
        insert, update = plan.insert, plan.update
        if not insert and not update:
            return
        tvecs = self.encoder().encode_texts([t for _, _, t in insert + update])
        new_ids = store.items.insert(
            TEXT, "sidecar", tvecs[: len(insert)], paths=[sc.path for _, sc, _ in insert],
            stats=[(sc.mtime_ns, sc.size) for _, sc, _ in insert], texts=[t for _, _, t in insert],
            image_ids=[i for i, _, _ in insert],
        ) if insert else []  # fmt: skip
        upd_ids = [i for i, _, _ in update]
        if update:
            store.items.update_vectors(
                upd_ids, tvecs[len(insert) :], texts=[t for _, _, t in update],
                paths=[sc.path for _, sc, _ in update], stats=[(sc.mtime_ns, sc.size) for _, sc, _ in update],
            )  # fmt: skip
            change.removed += upd_ids
        change.add(TEXT, new_ids + upd_ids, tvecs)

    def _read_sidecar(self, sidecar: FileStat) -> str | None:
        try:
            return read_sidecar(sidecar.path)
        except SidecarError as e:
            self.problem(display_path(sidecar.path), str(e))
            return None

    # ---- plumbing -------------------------------------------------------------------------
    def store_delete(self, ids: list[int]) -> list[int]:
        return self.store.items.delete(ids) if ids else []

    def first_write(self) -> None:
        if self._before_write is not None:
            self._before_write()
            self._before_write = None

    def _scan_error(self, path: bytes, reason: str) -> None:
        self.problem(display_path(path), reason)

    def _bad_file(self, path: bytes, reason: str) -> None:
        """An image entry that cannot be indexed at all (dangling link, symlink loop): a failure."""
        self.stats.failed += 1
        self.problem(display_path(path), reason)


def index_folders(
    parts: Parts, folders: list, include_hidden: bool, dropped: int | None, ocr: bool | None = None,
    **options: Any,
) -> IndexStats:  # fmt: skip
    """`Library.index`'s run, under the writer lock its caller holds, with the model already
    checked (and recorded, or re-embedded: ``dropped`` images then). ``ocr``: turn reading text on
    or off for good (None: as the library remembers). ``options`` as `IndexRun`'s."""
    indexes: dict[str, Any] = {}
    reading = TextReading.for_run(parts.store, ocr, options.get("problem"))

    def load_indexes() -> None:
        # Only a run that writes needs them (a big index takes seconds to load); they are
        # loaded before its first commit, so the changes then apply to them incrementally.
        indexes.update({kind: parts.indexes.get(kind) for kind in (IMAGE, TEXT)})

    run = IndexRun(parts.store, lambda sample: parts.models.writer_encoder(sample=sample),
                   before_write=load_indexes, reading=reading, **options)  # fmt: skip
    run.stats.dropped = dropped
    try:
        for change in run.run(folders, include_hidden, exclude=[parts.path]):
            for kind in indexes:
                parts.indexes.apply(kind, change.added.get(kind), change.removed)
            parts.indexes.maybe_save()
    except BaseException:
        parts.indexes.save_all()  # what was committed stays findable without a catch-up
        raise
    parts.indexes.finish()
    return run.stats
