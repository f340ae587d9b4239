"""The Library facade: one folder joining the store, the FAISS indexes and the model.

`Library` holds its parts (a `Store`, an `IndexSet`, a `ModelSlot` and a `Searcher` over them) and
takes the writer lock around every write; its verbs are the modules beside it, which receive the
parts they use and never the Library. Its reading verbs (search, similar, info, ...) are in
`clipdex.library.reads`, which it inherits. The CLI and the server use nothing else of the engine.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipdex.errors import ClipdexError
from clipdex.index.faiss.index_set import IndexSet
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE, TEXT
from clipdex.library.model_slot import ModelSlot
from clipdex.library.options import check_index_type, library_dir
from clipdex.library.parts import Parts
from clipdex.library.reads import LibraryReads
from clipdex.library.search import Searcher
from clipdex.results import (
    ImportCounts,
    IndexStats,
    Reembedded,
    WatchBatch,
)  # fmt: skip
from clipdex.retrieval.models import LoadedModel, ModelSpec, resolve_spec

Problem = Callable[[str, str], None]
Progress = Callable[[int, int], None]
Warn = Callable[[str], None]

log = logging.getLogger("clipdex")


class Library(LibraryReads):
    """A clipdex library. Keeps its model and indexes loaded, so repeated searches are cheap.

    >>> lib = Library.open("~/photos-lib", create=True, model="local-dir:./tiny")
    >>> lib.index("~/Pictures")
    >>> for hit in lib.search(text="a dog on a beach", k=5):
    ...     print(hit.score, hit.path)
    """

    def __init__(
        self, path: Path, store: Store, requested: ModelSpec | None, device: str = "auto",
        warn: Warn | None = None, gpu_index: bool = False, runtime: str | None = None,
        precision: str | None = None, notice: Warn | None = None,
    ):  # fmt: skip
        self.path = path
        self.store = store
        self.indexes = IndexSet(path, store, warn or log.warning)
        self.models = ModelSlot(store, requested, device, path, runtime, precision, notice)
        self.parts = Parts(path, store, self.indexes, self.models)
        self.searcher = Searcher(path, store, self.indexes, self.models, gpu_index)
        self.last_reembed: Reembedded | None = None  # what the last re-embedding did
        self._watch_stop = threading.Event()  # set by stop(): ends watch()

    # ---- opening --------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike | None = None,
        create: bool = False,
        model: str | None = None,
        pretrained: str | None = None,
        device: str = "auto",
        warn: Warn | None = None,
        gpu_index: bool = False,
        runtime: str | None = None,
        precision: str | None = None,
        notice: Warn | None = None,
        force_int8: bool = False,
    ) -> Library:
        """Open the library at ``path`` (default: ``default_library_dir()``).

        ``device`` is the model's (auto, cpu, cuda, mps; auto reads ``$CLIPDEX_DEVICE``).
        ``gpu_index=True`` searches a GPU copy of the FAISS index when FAISS sees a GPU: worth it
        for a long-lived process (serve) that answers many queries, not for one search (the copy
        costs more than a CPU search).
        ``model``/``pretrained`` name the model for a new library; writing with a different one than
        the stored model is refused unless it re-embeds (``index(..., reembed=True)``). The library
        is opened for reading (it works on a read-only folder); writing methods take the writer
        lock and reopen it for writing. ``warn`` receives one-line warnings (default: logging).
        ``runtime`` encodes: auto (ONNX Runtime where it has a provider for the device, else torch;
        or ``$CLIPDEX_RUNTIME``), onnx or torch; see `clipdex.library.runtime`. ``precision``
        (fp32, int8) for a new library, or a re-embedding at another one, like ``model``.
        ``notice`` receives what a command says on stderr (an ONNX export, its figures).
        ``force_int8``: export int8 graphs even where they keep under 90% of the pictures' top-10.
        """
        lib_dir = library_dir(path)
        if lib_dir.exists() and not lib_dir.is_dir():
            raise ClipdexError(f"library path {lib_dir} exists and is not a directory")
        store = Store(lib_dir, create=create, write=False)
        requested = resolve_spec(model, pretrained) if (model or pretrained) else None
        lib = cls(lib_dir, store, requested, device, warn, gpu_index, runtime, precision, notice)
        lib.models.force_int8 = force_int8
        return lib

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer lock with the store open for writing (re-entrant)."""
        with self.parts.writing():
            yield

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- model ----------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec | None:
        """The model the library's vectors were made with (None until vectors are stored)."""
        return self.models.stored

    @property
    def model(self) -> LoadedModel:
        """The library's model (loaded once, kept)."""
        return self.models.model

    def writer_model(
        self, reembed: bool = False, problem: Problem | None = None, drop_unembeddable: bool = False
    ) -> LoadedModel:
        """Model for a writing command: check, load, record (first time) or re-embed (on change)."""
        lm, stale = self.models.for_writing(reembed)
        if stale:
            self.last_reembed = self.reembed(lm, problem=problem, drop_unembeddable=drop_unembeddable)
        return lm

    # ---- writing --------------------------------------------------------------------------
    def index(
        self,
        folders: str | os.PathLike | Sequence[str | os.PathLike | bytes],
        *,
        include_hidden: bool = False,
        reembed: bool = False,
        batch_size: int | None = None,
        workers: int | None = None,
        exact_decode: bool = False,
        index_type: str | None = None,
        retry_failed: bool = False,
        drop_unembeddable: bool = False,
        ocr: bool | None = None,
        videos: bool = True,
        video_interval: float | None = None,
        problem: Problem | None = None,
        progress: Progress | None = None,
        video_progress: Progress | None = None,
    ) -> IndexStats:
        """Bring the library in line with ``folders``: add new, re-embed changed, drop deleted files.

        Files that failed to decode before are not retried until they change (``retry_failed``
        retries them). A re-embedding (``reembed``, or another model) refuses when some images have
        no file to re-embed from, unless ``drop_unembeddable``. ``ocr=True`` reads the text in the
        pictures (RapidOCR) from now on, pictures already indexed included; ``ocr=False`` stops
        reading (the text read so far stays); None: as the library remembers.
        """
        from clipdex.index.scan import check_folders
        from clipdex.library.indexing import index_folders

        folders = [folders] if isinstance(folders, (str, bytes, os.PathLike)) else list(folders)
        folders = [os.path.expanduser(f) if isinstance(f, str) else f for f in folders]
        check_folders(folders)  # before anything is touched: a missing FOLDER removes nothing
        if index_type is not None:
            check_index_type(index_type)
        with self.writing():
            if index_type is not None:
                self.indexes.set_index_type(index_type)
            stored, models = self.spec, self.models
            models.check(reembed)  # before anything is written, even where nothing needs encoding
            dropped = None
            new_precision = models.target_precision != models.precision
            if stored is None or reembed or models.target != stored or new_precision:
                self.last_reembed = None
                self.writer_model(reembed, problem, drop_unembeddable)  # load now: it records or re-embeds
                dropped = self.last_reembed.dropped if self.last_reembed else None
            return index_folders(
                self.parts, folders, include_hidden, dropped, batch_size=batch_size, workers=workers,
                exact_decode=exact_decode, problem=problem, progress=progress, retry_failed=retry_failed,
                ocr=ocr, videos=videos, video_interval=video_interval, video_progress=video_progress,
            )  # fmt: skip

    def watch(
        self,
        folders: str | os.PathLike | Sequence[str | os.PathLike | bytes],
        *,
        on_batch: Callable[[WatchBatch], None] | None = None,
        debounce: float = 1.0,
        include_hidden: bool = False,
        batch_size: int = 32,
        workers: int | None = None,
        exact_decode: bool = False,
        rescan_every: float = 3600.0,
        problem: Problem | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Follow ``folders`` and apply what changes in them as `index` would; blocks until `stop`.

        First brings the library in line with the folders (like `index`), then applies new,
        changed, moved and deleted files batch by batch: a file is taken once its size and mtime
        held for ``debounce`` seconds; each batch (at most ``batch_size`` pictures to encode) is
        one transaction, the writer lock held only while it commits; ``on_batch`` gets its counts.
        A folder that vanishes is waited for (its items stay); lost events, a returning folder and
        every ``rescan_every`` seconds (0: never) trigger a stat-only rescan. ``on_ready``: called
        once, when the first pass is applied. See `clipdex.library.watching`.
        """
        from clipdex.library.watching import Watcher, WatchOptions

        folders = [folders] if isinstance(folders, (str, bytes, os.PathLike)) else list(folders)
        if debounce < 0 or batch_size < 1:
            raise ValueError("debounce must be >= 0 and batch_size >= 1")
        options = WatchOptions(debounce, include_hidden, batch_size, workers, exact_decode, rescan_every)
        watcher = Watcher(self.parts, folders, options, self._watch_stop, on_batch=on_batch, problem=problem,
                          notice=self.models.notice, on_ready=on_ready)  # fmt: skip
        try:
            watcher.run()
        finally:
            self._watch_stop.clear()

    def stop(self) -> None:
        """End a running `watch` (from another thread or a signal handler): the batch being
        applied is finished first."""
        self._watch_stop.set()

    def add_texts(self, texts: Sequence[str], source: str = "add-texts", batch_size: int = 256) -> list[int]:
        """Store and index free texts (searchable with ``target="texts"``); returns the new ids.

        A text is keyed by its exact (stripped) content: texts already stored and repeats within
        ``texts`` are not added again, so an interrupted run can simply be run again. Texts are
        encoded ``batch_size`` at a time (the next batch tokenised meanwhile), each batch stored
        in one transaction with one bulk insert.
        """
        from clipdex.library.texts import add_texts

        return add_texts(self.parts, texts, source, batch_size)

    def import_embeddings(
        self,
        vectors_path: str | os.PathLike,
        metadata_path: str | os.PathLike | None = None,
        modality: str | None = None,
        progress: Progress | None = None,
        index_type: str | None = None,
        ray: str | None = None,
    ) -> ImportCounts:
        """Store vectors computed elsewhere (``.npy`` + metadata, or a SHARD_DIR when ``metadata_path``
        is None: `clipdex embed`'s or clip-retrieval's output folder); see `clipdex.library.importing`.

        Idempotent: an image row is keyed by its path, a text row by its exact content; a re-run
        adds nothing, a changed vector for a known key updates that item (same id). ``index_type``
        as in `index` (``"ivf-pq-ondisk"``: large-library mode, where the arrays are hard-linked
        or copied into the library and stay the vectors' storage). ``ray`` (a Ray address, or
        ``"local"``): when that mode rebuilds its index, the blocks are filled in Ray tasks.
        """
        from clipdex.library.importing import import_embeddings, import_shard_dir

        if index_type is not None:
            check_index_type(index_type)
        if metadata_path is None:
            if modality is not None:
                raise ValueError("a shard folder says its modalities itself: no modality= with it")
            return import_shard_dir(self.parts, vectors_path, progress, index_type, ray)
        return import_embeddings(
            self.parts, vectors_path, metadata_path, modality, progress, index_type, ray=ray
        )

    def reembed(
        self,
        lm: LoadedModel,
        problem: Problem | None = None,
        progress: Progress | None = None,
        drop_unembeddable: bool = False,
        batch_size: int | None = None,
    ) -> Reembedded:
        """Re-embed every item with ``lm`` and make it the library's model (``batch_size`` images
        per encoder batch; default by device, or ``$CLIPDEX_BATCH_SIZE``).

        New vectors go to a pending table and are swapped in at the end in one transaction, so
        searches keep working on the old vectors meanwhile and an interrupted run resumes. Images
        with no readable file make it refuse (ClipdexError, nothing changed) unless
        ``drop_unembeddable``: then they are deleted and counted in ``dropped``.
        """
        from clipdex.library.reembed import reembed_all

        precision = self.models.target_precision
        enc = self.models.writer_encoder(lm, precision)
        n = reembed_all(
            self.store, enc, lm.spec, precision=precision, drop_unembeddable=drop_unembeddable,
            problem=problem, progress=progress, batch_size=batch_size,
        )  # fmt: skip
        self.indexes.forget()
        for kind in (IMAGE, TEXT):
            self.indexes.get(kind)
        self.indexes.finish()
        return n

    # ---- reporting ------------------------------------------------------------------------
    def check(self, repair: bool = False) -> dict:
        """``{"healthy", "problems": [{"kind", "detail"}], "repaired"}``; see `clipdex.library.check`."""
        from clipdex.library.check import check_library

        return check_library(self.parts, repair).to_dict()

    def use_model(
        self, model: str, pretrained: str | None = None, problem: Problem | None = None,
        progress: Progress | None = None, drop_unembeddable: bool = False, precision: str | None = None,
    ) -> Reembedded:  # fmt: skip
        """Make ``model`` (e.g. a fine-tuned local-dir) the library's model, at ``precision`` (default:
        the library's); re-embeds everything. Returns the counts (``total`` re-embedded,
        ``dropped``); see `reembed`."""
        from clipdex.library.runtime import precision_choice

        spec = resolve_spec(model, pretrained)
        models = self.models
        with self.writing():
            models.requested_precision = precision_choice(precision) or models.requested_precision
            lm = models.load(spec)
            n = self.reembed(lm, problem=problem, progress=progress, drop_unembeddable=drop_unembeddable)
            models.keep(lm)
            models.requested, models.requested_precision = None, None  # the library's own now
        return n

    # ---- models: fine-tuning, graphs ------------------------------------------------
    def finetune(
        self, pairs: Any = None, *, apply: bool = False, drop_unembeddable: bool = False,
        problem: Problem | None = None, **options: Any,
    ) -> Any:  # fmt: skip
        """Fine-tune the library's model on image–caption pairs; returns a `FinetuneResult`.

        ``pairs``: a PAIRS file or folder, a list of ``(image, caption)``, or None for the library's
        own captioned images. Options: ``val`` (held-out pairs; default a seeded split of
        ``val_fraction``=0.1 of the images), ``test_fraction`` (0.1: ``before``/``after`` are measured
        on this split; ``result.report_split`` says "val" when it is too small), ``config`` (a
        `FinetuneConfig`), ``out`` (default ``LIBRARY/models/finetune-…``), ``apply`` (make it the
        library's model and re-embed; ``drop_unembeddable`` as in `use_model`), and callbacks:
        ``progress`` (each epoch's figures), ``on_step`` (step, total, {epoch, loss, lr}),
        ``on_start`` and ``problem``. ``captions_from`` (without ``pairs``): "sidecars" (default),
        "ocr" (the text read in the pictures) or "all".
        """
        from clipdex.library.finetuning import finetune_library

        result = finetune_library(self.parts, pairs, problem=problem, **options)
        if apply:
            done = self.use_model(result.model, problem=problem, drop_unembeddable=drop_unembeddable)
            result.reembedded, result.dropped = done.total, done.dropped
        return result

    def export_onnx(self, int8: bool = False, progress: Callable[[str], None] | None = None) -> dict:
        """Export the library's model to ONNX graphs in ``LIBRARY/models/onnx-…/`` (checked against
        torch first), so that queries are encoded by ONNX Runtime without torch; returns the
        manifest with its ``folder``. ``int8`` adds quantised graphs, with their agreement on a
        sample of the library's pictures (refused below 90% top-10 overlap unless forced)."""
        from clipdex.library.runtime import graphs_dir, sample_pictures
        from clipdex.retrieval.onnx.export import export_model

        with self.writing():
            lm = self.model
            folder = graphs_dir(self.path, lm.spec)
            paths = [p for _, p, _ in self.store.items.iter(IMAGE) if p] if int8 else []
            manifest = export_model(
                lm, folder, int8=int8, pictures=sample_pictures(paths, lm.image_size), on_progress=progress,
                force_int8=self.models.force_int8,
            )  # fmt: skip
        self.models.forget_runtime()
        return {**manifest, "folder": str(folder)}
