"""One `index` run: scan → decode → encode → store, committed in batches.

Joins `index/` (files, SQLite, FAISS) and `retrieval/` (model, tensors); the Library drives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from clipdex.index.scan import FileStat, ScannedImage, display_path, is_under, read_sidecar, scan, scan_roots
from clipdex.index.store import IMAGE, TEXT, FileRecord, PhotoMeta, Store
from clipdex.results import IndexStats
from clipdex.retrieval.decode import default_workers
from clipdex.retrieval.models import LoadedModel

Problem = Callable[[str, str], None]  # (display path, reason) -> report it on stderr


@dataclass(slots=True)
class Change:
    """The vectors that one committed batch added and removed (the FAISS indexes follow it)."""

    added: dict[str, tuple[list[int], np.ndarray]]
    removed: list[int]


@dataclass(slots=True)
class _Todo:
    scanned: ScannedImage
    old: FileRecord | None


class IndexRun:
    """Brings the store in line with FOLDERs; yields one Change per committed batch.

    ``model`` is a getter: a run with nothing new to embed never loads the model (nor torch's weights).
    """

    def __init__(
        self,
        store: Store,
        model: Callable[[], LoadedModel],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        exact_decode: bool = False,
        problem: Problem | None = None,
        progress: Callable[[int, int], None] | None = None,
        before_write: Callable[[], None] | None = None,
    ):
        self.store, self._model = store, model
        self._before_write = before_write  # called once, before the first commit
        self.batch_size = max(1, batch_size)
        self.workers = workers or default_workers()
        self.exact_decode = exact_decode
        self.problem = problem or (lambda path, reason: None)
        self.progress = progress
        self.stats = IndexStats()
        self._photos: dict[bytes, PhotoMeta] = {}  # path -> date and size, from the decode threads

    def run(
        self, folders: Sequence[str | bytes], include_hidden: bool, exclude: Sequence
    ) -> Iterator[Change]:
        known = self.store.scanned_files()
        captions = self.store.sidecars()
        seen: set[bytes] = set()
        todo: list[_Todo] = []
        caption_fixes: list[tuple[int, ScannedImage]] = []
        for s in scan(folders, include_hidden=include_hidden, exclude=exclude, on_error=self._scan_error):
            seen.add(s.image.path)
            old = known.get(s.image.path)
            if old is not None and old.mtime_ns == s.image.mtime_ns and old.size == s.image.size:
                self.stats.unchanged += 1
                if _sidecar_changed(captions.get(old.id), s.sidecar):
                    caption_fixes.append((old.id, s))
            else:
                todo.append(_Todo(s, old))
        if self.progress:
            self.progress(0, len(todo))
        yield from self._embed_images(todo, captions)
        yield from self._fix_captions(caption_fixes, captions)
        # Only after a complete scan: files gone from under this run's FOLDERs.
        roots = scan_roots(folders)
        gone = [rec.id for path, rec in known.items() if path not in seen and is_under(path, roots)]
        if gone:
            self.stats.removed += len(gone)
            self.stats.texts_removed += sum(1 for i in gone if i in captions)
            yield self._commit([], [], gone)

    @property
    def lm(self) -> LoadedModel:
        return self._model()

    # ---- images ---------------------------------------------------------------------------
    def _embed_images(self, todo: list[_Todo], captions: dict) -> Iterator[Change]:
        if not todo:
            return
        from clipdex.retrieval.embed import embed_image_files  # torch: only when there is work

        lm = self.lm
        batches = embed_image_files(
            lm, todo, lambda t: t.scanned.image.path, batch_size=self.batch_size, workers=self.workers,
            draft_to=None if self.exact_decode else lm.image_size, on_info=self._remember_photo,
        )  # fmt: skip
        for encoded, failed, done in batches:
            failed_old = []
            for t, error in failed:
                self.stats.failed += 1
                self.problem(display_path(t.scanned.image.path), str(error) or type(error).__name__)
                if t.old is not None:  # its stored vector describes content that is gone
                    failed_old.append(t.old.id)
            if encoded or failed_old:
                yield self._store_images(encoded, captions, failed_old)
            if self.progress:
                self.progress(done, len(todo))

    def _remember_photo(self, todo: _Todo, info: tuple) -> None:
        self._photos[todo.scanned.image.path] = PhotoMeta(*info)

    def _store_images(self, batch: list, captions: dict, failed_old: list[int]) -> Change:
        from clipdex.retrieval.embed import encode_texts

        dim = self.lm.embed_dim
        vecs = np.stack([v for _, v in batch]) if batch else np.zeros((0, dim), np.float32)
        texts = [
            (i, read_sidecar(t.scanned.sidecar.path)) for i, (t, _) in enumerate(batch) if t.scanned.sidecar
        ]
        texts = [(i, s) for i, s in texts if s]
        tvecs = encode_texts(self.lm, [s for _, s in texts])
        removed = list(failed_old)
        for t, _ in batch:
            if t.old is None:
                self.stats.added += 1
            else:
                self.stats.updated += 1
                removed.append(t.old.id)
        with_caption = {i for i, _ in texts}
        for i, (t, _) in enumerate(batch):
            had = t.old is not None and t.old.id in captions
            if had and i in with_caption:
                self.stats.texts_updated += 1
            elif had:
                self.stats.texts_removed += 1
            elif i in with_caption:
                self.stats.texts_added += 1
        self.stats.texts_removed += sum(1 for i in failed_old if i in captions)
        images = [t.scanned.image for t, _ in batch]
        sidecars = [batch[i][0].scanned.sidecar for i, _ in texts]
        return self._commit(images, list(zip(texts, sidecars)), removed, vecs, tvecs)

    def _commit(
        self,
        images: list[FileStat],
        texts: list,
        removed: list[int],
        vecs: np.ndarray | None = None,
        tvecs: np.ndarray | None = None,
    ) -> Change:
        """One transaction: delete replaced rows, insert images and their captions, bump generation."""
        store = self.store
        self._first_write()
        with store.transaction():
            gone = store.delete(removed)
            image_ids = store.insert(
                IMAGE, "scan", vecs if vecs is not None else np.zeros((0, 0), np.float32),
                paths=[f.path for f in images], stats=[(f.mtime_ns, f.size) for f in images],
                photos=[self._photos.pop(f.path, None) for f in images],
            ) if images else []  # fmt: skip
            text_ids = []
            if texts:
                text_ids = store.insert(
                    TEXT, "sidecar", tvecs,
                    paths=[sc.path for _, sc in texts], stats=[(sc.mtime_ns, sc.size) for _, sc in texts],
                    texts=[s for (_, s), _ in texts], image_ids=[image_ids[i] for (i, _), _ in texts],
                )  # fmt: skip
            store.bump_generation()
        added = {}
        if image_ids:
            added[IMAGE] = (image_ids, vecs)
        if text_ids:
            added[TEXT] = (text_ids, tvecs)
        return Change(added, gone)

    # ---- captions of unchanged images -----------------------------------------------------
    def _fix_captions(self, fixes: list[tuple[int, ScannedImage]], captions: dict) -> Iterator[Change]:
        if not fixes:
            return
        from clipdex.retrieval.embed import encode_texts

        for start in range(0, len(fixes), 256):
            chunk = fixes[start : start + 256]
            removed, new = [], []
            for image_id, s in chunk:
                had = captions.get(image_id)
                text = read_sidecar(s.sidecar.path) if s.sidecar else None
                if had:
                    removed.append(had[0])
                if had and text:
                    self.stats.texts_updated += 1
                elif had:
                    self.stats.texts_removed += 1
                elif text:
                    self.stats.texts_added += 1
                if text:
                    new.append((image_id, text, s.sidecar))
            if not removed and not new:
                continue  # e.g. an empty sidecar: no caption then, none now; nothing to write
            # Only new captions need the model; a removal alone must not load it.
            tvecs = encode_texts(self.lm, [t for _, t, _ in new]) if new else None
            self._first_write()
            with self.store.transaction():
                gone = self.store.delete(removed)
                ids = self.store.insert(
                    TEXT, "sidecar", tvecs,
                    paths=[sc.path for _, _, sc in new], stats=[(sc.mtime_ns, sc.size) for _, _, sc in new],
                    texts=[t for _, t, _ in new], image_ids=[i for i, _, _ in new],
                ) if new else []  # fmt: skip
                self.store.bump_generation()
            yield Change({TEXT: (ids, tvecs)} if ids else {}, gone)

    def _first_write(self) -> None:
        if self._before_write is not None:
            self._before_write()
            self._before_write = None

    def _scan_error(self, path: bytes, reason: str) -> None:
        self.problem(display_path(path), reason)


def _sidecar_changed(had: tuple | None, now: FileStat | None) -> bool:
    if had is None:
        return now is not None
    if now is None:
        return True
    _, path, mtime, size = had
    return path != now.path or mtime != now.mtime_ns or size != now.size
