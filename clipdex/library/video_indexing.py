"""The videos of one `index` run: each video becomes one image item per kept frame (a span).

`IndexRun` hands its scanned videos here after the pictures. A video is compared with the store as
one file (all its frames share its stat and content hash): unchanged → nothing; moved within this
run's FOLDERs → its frames' path changes, their ids stay; new or changed → decoded from start to
end (a frame every ``interval`` seconds, the first always), encoded a batch at a time, and
consecutive frames alike the first of their span merged into it (`clipdex.retrieval.spans`). The
old frames go and the new ones come in ONE transaction per video, so a killed run never leaves
half a video: the next run sees the old (or no) frames and redoes the video whole.
A video that cannot be decoded is a remembered failure with its one-line reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from clipdex.index.scan import ScannedImage, content_hash
from clipdex.index.store.items import VIDEO
from clipdex.index.store.rows import PhotoMeta, VideoRecord
from clipdex.inputs.paths import display_path
from clipdex.kinds import IMAGE
from clipdex.library.change import Change
from clipdex.retrieval.prefetch import background
from clipdex.retrieval.spans import Span, close_spans, merge_spans

if TYPE_CHECKING:
    from clipdex.library.indexing import IndexRun


@dataclass(slots=True)
class VideoPlan:
    """What the scan found among the videos, before anything is written."""

    todo: list[tuple[ScannedImage, VideoRecord | None]] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)


class VideoIndexing:
    """The video half of an `IndexRun` (its store, encoder, stats, problem lines and first write)."""

    def __init__(self, run: IndexRun, interval: float, progress: Callable[[int, int], None] | None = None):
        """``progress(seconds decoded, seconds in the video)`` follows each video's decode."""
        if interval <= 0:
            raise ValueError("the video interval must be above 0 seconds")
        self.run, self.interval, self.progress = run, float(interval), progress
        self._known: dict[bytes, VideoRecord] | None = None  # read when first needed
        self.plan = VideoPlan()

    @property
    def known(self) -> dict[bytes, VideoRecord]:
        """The store's videos this run compares with: all of them, unless `limit` narrowed it."""
        if self._known is None:
            self._known = self.run.store.frames.video_files()
        return self._known

    def limit(self, paths: list[bytes], folders: list[bytes]) -> None:
        """Compare only with the videos at ``paths`` or under ``folders`` (a watch batch: not
        every video of the library read for each batch)."""
        self._known = self.run.store.frames.video_files(paths, folders)

    def consider(self, s: ScannedImage, failures: dict[bytes, tuple[int, int]]) -> None:
        """One scanned video: unchanged, remembered as failed, or to do."""
        run, f = self.run, s.image
        self.plan.seen.add(f.path)
        old = self.known.get(f.path)
        if old is not None and old.mtime_ns == f.mtime_ns and old.size == f.size:
            run.stats.unchanged += 1
        elif not run.retry_failed and failures.get(f.path) == (f.size, f.mtime_ns):
            run.stats.skipped_failed += 1
        else:
            self.plan.todo.append((s, old))

    def vanished(self, in_scope: Callable[[bytes], bool]) -> list[bytes]:
        """The stored videos under ``in_scope`` that the scan did not find (gone, or moved).
        Imported moments (no file seen: no mtime) are never removed, as imported pictures aren't."""
        return [
            p for p, r in self.known.items()
            if r.mtime_ns is not None and p not in self.plan.seen and in_scope(p)
        ]  # fmt: skip

    def apply(
        self, in_scope: Callable[[bytes], bool], failures: dict[bytes, tuple[int, int]]
    ) -> Iterator[Change]:
        """Moves, then new and changed videos (one commit each), then videos gone from FOLDERs."""
        run = self.run
        gone = {p: self.known[p] for p in self.vanished(in_scope)}
        todo = self._moves(self.plan.todo, gone)
        for s, old in todo:
            yield from self._index_one(s, old, failures)
        if gone:
            run.stats.removed += len(gone)
            run.first_write()
            ids = [i for r in gone.values() for i in r.ids]
            yield Change(removed=run.store_delete(ids))

    def _moves(self, todo: list, gone: dict[bytes, VideoRecord]) -> list:
        """Pair new videos with vanished ones of the same size and content hash: only the path of
        their frames changes (same ids, same vectors)."""
        rest = []
        for s, old in todo:
            f = s.image
            match = None
            if old is None and any(r.size == f.size for r in gone.values()):
                digest = content_hash(f.path, f.size)
                match = next(
                    (p for p, r in gone.items() if r.size == f.size and r.content_hash == digest), None
                )
            if match is None:
                rest.append((s, old))
                continue
            rec = gone.pop(match)
            self.run.first_write()
            self.run.store.items.update_files(
                list(rec.ids), paths=[f.path] * len(rec.ids), stats=[(f.mtime_ns, f.size)] * len(rec.ids)
            )
            self.run.stats.moved += 1
        return rest

    def _index_one(self, s: ScannedImage, old: VideoRecord | None, failures: dict) -> Iterator[Change]:
        from clipdex.retrieval.video import FRAMES_AHEAD, VideoError, VideoReader

        run, f = self.run, s.image
        enc = run.encoder()
        batch = max(1, min(run.batch_size or enc.default_batch_size(), 32))
        spans: list[Span] = []
        try:
            with VideoReader(f.path) as reader:
                follow = (lambda t, total: self.progress(int(t), int(total))) if self.progress else None
                decoded = reader.frames(self.interval, min(enc.image_size), follow)
                frames = background(decoded, FRAMES_AHEAD, "clipdex-video-decode")
                pending: list = []
                for frame in frames:
                    pending.append(frame)
                    if len(pending) >= batch:
                        self._encode(enc, pending, spans)
                        pending = []
                self._encode(enc, pending, spans)
                info, shown = reader.info, reader.shown_size
                end = reader.end
        except VideoError as e:
            self._failed(s, old, str(e), failures)
            if old is not None:  # its frames describe content that is gone
                run.first_write()
                yield Change(removed=run.store_delete(list(old.ids)))
            return
        close_spans(spans, info.duration, end)
        taken = info.created_at if info.created_at is not None else f.mtime_ns / 1e9
        meta = PhotoMeta(taken, *shown)
        digest = content_hash(f.path, f.size)
        run.first_write()
        change = Change()
        with run.store.transaction():  # the whole video or nothing
            if old is not None:
                change.removed += run.store_delete(list(old.ids))
            vecs = np.stack([sp.vector for sp in spans])
            ids = run.store.items.insert(
                IMAGE, VIDEO, vecs, paths=[f.path] * len(spans), stats=[(f.mtime_ns, f.size)] * len(spans),
                photos=[meta] * len(spans), spans=[(sp.t, sp.t_end) for sp in spans],
                hashes=[digest] * len(spans),
            )  # fmt: skip
            change.add(IMAGE, ids, vecs)
            if f.path in failures:
                run.store.failures.forget([f.path])
        if old is None:
            run.stats.added += 1
        else:
            run.stats.updated += 1
        run.stats.frames = (run.stats.frames or 0) + len(spans)
        yield change

    def _encode(self, enc, frames: list, spans: list[Span]) -> None:  # noqa: ANN001
        if frames:
            vecs = enc.encode_pictures([fr.picture for fr in frames])
            merge_spans(spans, [fr.t for fr in frames], vecs)

    def _failed(self, s: ScannedImage, old: VideoRecord | None, reason: str, failures: dict) -> None:
        run, f = self.run, s.image
        run.stats.failed += 1
        run.problem(display_path(f.path), reason)
        run.store.failures.record([(f.path, f.size, f.mtime_ns, reason)])
        run.failed_now.add(f.path)
