"""The Library facade: one directory joining the store, the FAISS indexes and the model.

`index/` knows files and vectors, `retrieval/` knows models and tensors; only this module (and the
indexing run it drives) joins them. The CLI parses, calls a Library and prints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipdex.errors import ClipdexError, ModelError
from clipdex.index.faiss.index_set import IndexSet
from clipdex.index.store.database import Store
from clipdex.index.store.lock import WriterLock
from clipdex.index.store.schema import DB_NAME
from clipdex.kinds import IMAGE, TEXT
from clipdex.results import ImportCounts, IndexStats, Reembedded
from clipdex.retrieval.models import LoadedModel, ModelSpec, load_model, resolve_spec
from clipdex.retrieval.query import Terms
from clipdex.searching import Searching

Problem = Callable[[str, str], None]
Progress = Callable[[int, int], None]
Warn = Callable[[str], None]

log = logging.getLogger("clipdex")


def default_library_dir() -> Path:
    """``$CLIPDEX_LIBRARY``, else the platform data dir's ``clipdex/default``."""
    env = os.environ.get("CLIPDEX_LIBRARY")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("clipdex")) / "default"


def check_index_type(index_type: str) -> None:
    """Refuse an unknown ``--index-type`` with the list of known ones."""
    from clipdex.index.faiss.policy import INDEX_TYPES

    if index_type not in ("auto", *INDEX_TYPES):
        raise ClipdexError(f"unknown index type '{index_type}' (choose auto, {', '.join(INDEX_TYPES)})")


class Library(Searching):
    """A clipdex library. Keeps its model and indexes loaded, so repeated searches are cheap.

    >>> lib = Library.open("~/photos-lib", create=True, model="local-dir:./tiny")
    >>> lib.index("~/Pictures")
    >>> for hit in lib.search(text="a dog on a beach", k=5):
    ...     print(hit.score, hit.path)
    """

    def __init__(
        self, path: Path, store: Store, requested: ModelSpec | None, device: str = "auto",
        warn: Warn | None = None, gpu_index: bool = False,
    ):  # fmt: skip
        self.path = path
        self.gpu_index = gpu_index
        self.store = store
        self.requested = requested
        self.device = device
        self._model: LoadedModel | None = None
        self._seen_generation: int | None = None
        self.indexes = IndexSet(path, store, warn or log.warning)
        self.last_reembed: Reembedded | None = None  # what the last re-embedding did

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
        """
        lib_dir = Path(path).expanduser().absolute() if path is not None else default_library_dir()
        if lib_dir.exists() and not lib_dir.is_dir():
            raise ClipdexError(f"library path {lib_dir} exists and is not a directory")
        store = Store(lib_dir, create=create, write=False)
        requested = resolve_spec(model, pretrained) if (model or pretrained) else None
        return cls(lib_dir, store, requested, device, warn, gpu_index)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer lock with the store open for writing (re-entrant)."""
        with WriterLock(self.path):
            self.store.make_writable()
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
        raw = self.store.meta.get("model")
        return ModelSpec.from_json(raw) if raw else None

    def _target_spec(self) -> ModelSpec:
        return self.requested or self.spec or resolve_spec(None)

    @property
    def model(self) -> LoadedModel:
        """The library's model (loaded once, kept)."""
        if self._model is None:
            self._model = load_model(self.spec or self._target_spec(), self.device)
        return self._model

    def check_model(self, reembed: bool) -> None:
        stored, wanted = self.spec, self.requested
        if stored and wanted and wanted != stored and not reembed:
            raise ModelError(
                f"this library uses model {stored}; refusing {wanted} "
                "(use `clipdex index --reembed` to re-embed everything with it)"
            )

    def _record_model(self, lm: LoadedModel) -> None:
        with self.store.transaction():
            self.store.meta.set("model", lm.spec.to_json())
            self.store.meta.set("dim", str(lm.embed_dim))

    def writer_model(
        self, reembed: bool = False, problem: Problem | None = None, drop_unembeddable: bool = False
    ) -> LoadedModel:
        """Model for a writing command: check, load, record (first time) or re-embed (on change)."""
        self.check_model(reembed)
        target = self._target_spec()
        stored = self.spec
        if self._model is None or self._model.spec != target:
            self._model = load_model(target, self.device)
        if stored is None:
            self._record_model(self._model)
        elif target != stored or reembed:
            self.last_reembed = self.reembed(
                self._model, problem=problem, drop_unembeddable=drop_unembeddable
            )
        return self._model

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
        problem: Problem | None = None,
        progress: Progress | None = None,
    ) -> IndexStats:
        """Bring the library in line with ``folders``: add new, re-embed changed, drop deleted files.

        Files that failed to decode before are not retried until they change (``retry_failed``
        retries them). A re-embedding (``reembed``, or another model) refuses when some images have
        no file to re-embed from, unless ``drop_unembeddable``.
        """
        from clipdex.index.scan import check_folders
        from clipdex.index_run import IndexRun

        folders = [folders] if isinstance(folders, (str, bytes, os.PathLike)) else list(folders)
        folders = [os.path.expanduser(f) if isinstance(f, str) else f for f in folders]
        check_folders(folders)  # before anything is touched: a missing FOLDER removes nothing
        if index_type is not None:
            check_index_type(index_type)
        with self.writing():
            if index_type is not None:
                self.indexes.set_index_type(index_type)
            stored = self.spec
            dropped = None
            if stored is None or reembed or self._target_spec() != stored:
                self.last_reembed = None
                self.writer_model(reembed, problem, drop_unembeddable)  # load now: it records or re-embeds
                dropped = self.last_reembed.dropped if self.last_reembed else None
            indexes: dict[str, Any] = {}

            def load_indexes() -> None:
                # Only a run that writes needs them (a big index takes seconds to load); they are
                # loaded before its first commit, so the changes then apply to them incrementally.
                indexes.update({kind: self.indexes.get(kind) for kind in (IMAGE, TEXT)})

            run = IndexRun(
                self.store, lambda: self.model, batch_size=batch_size, workers=workers,
                exact_decode=exact_decode, problem=problem, progress=progress, before_write=load_indexes,
                retry_failed=retry_failed,
            )  # fmt: skip
            run.stats.dropped = dropped
            try:
                for change in run.run(folders, include_hidden, exclude=[self.path]):
                    for kind in indexes:
                        self.indexes.apply(kind, change.added.get(kind), change.removed)
                    self.indexes.maybe_save()
            except BaseException:
                self.indexes.save_all()  # what was committed stays findable without a catch-up
                raise
            self.indexes.finish()
            return run.stats

    def add_texts(self, texts: Sequence[str], source: str = "add-texts", batch_size: int = 256) -> list[int]:
        """Store and index free texts (searchable with ``target="texts"``); returns the new ids.

        A text is keyed by its exact (stripped) content: texts already stored and repeats within
        ``texts`` are not added again, so an interrupted run can simply be run again. Texts are
        encoded ``batch_size`` at a time (the next batch tokenised meanwhile), each batch stored
        in one transaction with one bulk insert.
        """
        from clipdex.retrieval.embed import iter_encode_texts

        texts = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
        with self.writing():
            if texts and self.store.dim is not None:
                known = self.store.merge.known_texts(texts)
                texts = [t for t in texts if t not in known]
            if not texts:
                return []
            lm = self.writer_model()
            self.indexes.get(TEXT)
            ids: list[int] = []
            for start, vecs in iter_encode_texts(lm, texts, batch_size):
                new = self.store.items.insert_many(TEXT, source, vecs, texts=texts[start : start + len(vecs)])
                self.indexes.apply(TEXT, (new.tolist(), vecs), [])
                self.indexes.maybe_save()
                ids += new.tolist()
            self.indexes.finish()
        return ids

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
        is None: `clipdex embed`'s or clip-retrieval's output folder); see `clipdex.import_run`.

        Idempotent: an image row is keyed by its path, a text row by its exact content; a re-run
        adds nothing, a changed vector for a known key updates that item (same id). ``index_type``
        as in `index` (``"ivf-pq-ondisk"``: large-library mode, where the arrays are hard-linked
        or copied into the library and stay the vectors' storage). ``ray`` (a Ray address, or
        ``"local"``): when that mode rebuilds its index, the blocks are filled in Ray tasks.
        """
        from clipdex.import_run import import_embeddings, import_shard_dir

        if index_type is not None:
            check_index_type(index_type)
        if metadata_path is None:
            if modality is not None:
                raise ValueError("a shard folder says its modalities itself: no modality= with it")
            return import_shard_dir(self, vectors_path, progress, index_type, ray)
        return import_embeddings(self, vectors_path, metadata_path, modality, progress, index_type, ray=ray)

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
        from clipdex.reembed import reembed_all

        n = reembed_all(
            self.store, lm, drop_unembeddable=drop_unembeddable, problem=problem, progress=progress,
            batch_size=batch_size,
        )  # fmt: skip
        self.indexes.forget()
        for kind in (IMAGE, TEXT):
            self.indexes.get(kind)
        self.indexes.finish()
        return n

    # ---- following other processes ------------------------------------------------------
    def _follow_writers(self) -> int:
        """The store's generation; when it moved, another process may have changed the model
        (use-model, finetune --apply): then it is reloaded."""
        gen = self.store.generation
        if gen != self._seen_generation:
            self._seen_generation = gen
            spec = self.spec if self._model is not None else None
            if spec is not None and self._model.spec != spec:
                self._model = None
        return gen

    def refresh(self) -> None:
        """Catch up with other processes (a long-running reader calls this per request): the next
        query loads the library's new model if another process changed it; the indexes catch up
        from the change log on their next search."""
        self._follow_writers()

    # ---- reporting ------------------------------------------------------------------------
    def info(self) -> dict:
        """Model, dimension, counts by kind, index types, paths and sizes on disk, the storage mode.

        Each index's ``bytes_per_vector`` is what it holds in RAM per vector; an on-disk index
        (large-library mode) adds ``index_bytes_per_vector_on_disk`` (its mapped lists and ids) and
        ``vector_bytes_per_vector_on_disk`` (the float16 vectors)."""
        spec = self.spec
        files = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.is_file()}
        models = self.path / "models"
        model_bytes = (
            sum(f.stat().st_size for f in models.rglob("*") if f.is_file()) if models.is_dir() else 0
        )
        counts = self.store.items.counts()
        listed = self.store.vector_files.listed()
        vector_bytes = sum(size for *_, size in listed)
        indexes = {}
        for kind in (IMAGE, TEXT):
            idx = self.indexes.view(kind)
            indexes[kind + "s"] = {**idx.info, "ntotal": idx.ntotal}
        return {
            "library": str(self.path),
            "database": str(self.path / DB_NAME),
            "model": spec.name if spec else None,
            "pretrained": spec.pretrained if spec else None,
            "dim": self.store.dim,
            "images": counts["images"],
            "texts": counts["texts"],
            "failed_files": self.store.failures.count(),
            "counts": counts,
            "indexes": indexes,
            "generation": self.store.generation,
            "schema_version": int(self.store.meta.get("schema_version") or 0),
            "bytes_on_disk": sum(files.values()) + model_bytes + vector_bytes,
            "files": files,
            # Large-library mode: vectors as float16 rows of files in vectors/ (clipdex.index.faiss.ondisk).
            "mode": "large-library" if self.store.vector_files.large_mode else "normal",
            "vector_files": {"count": len(listed), "bytes": vector_bytes},
        }

    def check(self, repair: bool = False) -> dict:
        """``{"healthy", "problems": [{"kind", "detail"}], "repaired"}``; see `clipdex.check`."""
        from clipdex.check import check_library

        return check_library(self, repair).to_dict()

    def caption_pairs(self) -> list[tuple[str, str]]:
        """(image path, caption) pairs already in the library (sidecar captions), for fine-tuning."""
        return [(os.fsdecode(p), t) for p, t in self.store.items.caption_pairs()]

    def use_model(
        self, model: str, pretrained: str | None = None, problem: Problem | None = None,
        progress: Progress | None = None, drop_unembeddable: bool = False,
    ) -> Reembedded:  # fmt: skip
        """Make ``model`` (e.g. a fine-tuned local-dir) the library's model; re-embeds everything.

        Returns the counts (``total`` re-embedded, ``dropped``); see `reembed`.
        """
        spec = resolve_spec(model, pretrained)
        with self.writing():
            lm = (
                self._model
                if self._model is not None and self._model.spec == spec
                else load_model(spec, self.device)
            )
            n = self.reembed(lm, problem=problem, progress=progress, drop_unembeddable=drop_unembeddable)
            self._model, self.requested = lm, None
        return n

    # ---- models: fine-tuning, explanations ------------------------------------------------
    def finetune(self, pairs: Any = None, **options: Any) -> Any:
        """Fine-tune the library's model on image–caption pairs; returns a `FinetuneResult`.

        ``pairs``: a PAIRS file or folder, a list of ``(image, caption)``, or None for the library's
        own captioned images. Options: ``val`` (held-out pairs; default a seeded split of
        ``val_fraction``=0.1 of the images), ``test_fraction`` (0.1: ``before``/``after`` are measured
        on this split; ``result.report_split`` says "val" when it is too small), ``config`` (a
        `clipdex.retrieval.finetune.FinetuneConfig`), ``out`` (default ``LIBRARY/models/finetune-…``),
        ``apply`` (make it the library's model and re-embed; ``drop_unembeddable`` as in `use_model`),
        ``progress``/``problem`` callbacks.
        """
        from clipdex.finetuning import finetune_library

        return finetune_library(self, pairs, **options)

    def explain(self, image: str | os.PathLike | bytes, text: str | None = None, vector: Any = None) -> Any:
        """Occlusion heat map of ``image`` for a ``text`` (or query ``vector``) with the library's model.

        Returns a `clipdex.retrieval.explain.Explanation`: ``.score`` (the cosine search reports),
        ``.heat`` and ``.png()``; see that module for the method.
        """
        from clipdex.retrieval.explain import explain, open_for_explain

        if (text is None) == (vector is None):
            raise ValueError("give exactly one of text=, vector=")
        picture = open_for_explain(image)
        query = (
            self._vector_query(vector) if vector is not None else self._composed_query(Terms.of(text), None)
        )
        return explain(self.model, picture, query)
