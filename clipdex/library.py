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

import numpy as np

from clipdex.errors import ClipdexError, ModelError
from clipdex.index.filters import Filter
from clipdex.index.indexset import IndexSet
from clipdex.index.lock import WriterLock
from clipdex.index.store import DB_NAME, IMAGE, TEXT, Store
from clipdex.results import DuplicateItem, ImportCounts, IndexStats, Reembedded, SearchResult
from clipdex.retrieval.models import LoadedModel, ModelSpec, load_model, resolve_spec
from clipdex.retrieval.query import Terms, Weights, compose

Problem = Callable[[str, str], None]
Progress = Callable[[int, int], None]
ImageArg = str | os.PathLike | bytes
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
    from clipdex.index.choose import INDEX_TYPES

    if index_type not in ("auto", *INDEX_TYPES):
        raise ClipdexError(f"unknown index type '{index_type}' (choose auto, {', '.join(INDEX_TYPES)})")


def _kind(target: str) -> str:
    """The stored kind ("image"/"text") a search ``target`` ("images"/"texts") names."""
    kind = {"images": IMAGE, "texts": TEXT, "image": IMAGE, "text": TEXT}.get(target)
    if kind is None:
        raise ValueError(f"target must be 'images' or 'texts', not {target!r}")
    return kind


class Library:
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
        raw = self.store.get_meta("model")
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
            self.store.set_meta("model", lm.spec.to_json())
            self.store.set_meta("dim", str(lm.embed_dim))

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
                known = self.store.known_texts(texts)
                texts = [t for t in texts if t not in known]
            if not texts:
                return []
            lm = self.writer_model()
            self.indexes.get(TEXT)
            ids: list[int] = []
            for start, vecs in iter_encode_texts(lm, texts, batch_size):
                new = self.store.insert_many(TEXT, source, vecs, texts=texts[start : start + len(vecs)])
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

    # ---- searching ------------------------------------------------------------------------
    def search(
        self,
        text: str | Sequence[str] | None = None,
        image: ImageArg | Sequence[ImageArg] | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        k: int = 10,
        target: str = "images",
        *,
        not_text: str | Sequence[str] | None = None,
        not_image: ImageArg | Sequence[ImageArg] | None = None,
        weights: Weights = None,
        filter: Filter | None = None,
    ) -> list[SearchResult]:
        """Best ``k`` items of ``target`` ("images" or "texts") for one query, best first.

        The query is ``vector`` (an embedding in the library's space), or a composed query: any
        number of ``text`` and ``image`` terms (a value or a list each), minus ``not_text`` and
        ``not_image`` terms; its vector is the normalised weighted sum of the positive terms' unit
        vectors minus the negative ones'. ``weights`` is one non-negative number per term in the
        order text, image, not_text, not_image, or a mapping from those names to a number (all
        terms of that name) or a list (default: all 1). ``filter`` (`clipdex.Filter`) keeps only
        items under some folders, in a date range, with or without captions, above a score; the
        result is still the best k among the items that match.
        """
        from clipdex.index import filters

        terms = Terms.of(text, image, not_text, not_image)
        if vector is not None and terms.count:
            raise ValueError("give vector= alone, or text=/image= terms (with not_text=/not_image=)")
        if vector is None and not terms.positives:
            raise ValueError("give text=, image= or vector= (negative terms alone are not a query)")
        if k < 1:
            raise ValueError("k must be at least 1")
        kind = _kind(target)
        if filter is not None and not isinstance(filter, Filter):
            raise TypeError("filter must be a clipdex.Filter")
        index = self.indexes.view(kind, self._follow_writers())  # one generation read when nothing changed
        if index.ntotal == 0:
            what = "images" if kind == IMAGE else "texts"
            raise ClipdexError(f"the library at {self.path} has no {what} to search")
        if vector is not None:
            query = self._vector_query(vector, index.dim)
        else:
            query = self._composed_query(terms, weights)
        index.use_gpu = self.gpu_index
        hits = filters.search(index, self.store, kind, query, k, filter)
        items = self.store.items([i for i, _ in hits])
        linked = self.store.items([it.image_id for it in items.values() if it.image_id is not None])
        results = []
        for rank, (item_id, score) in enumerate(hits, start=1):
            it = items[item_id]
            path = it.path if kind == IMAGE else (linked[it.image_id].path if it.image_id in linked else None)
            text = it.text if kind == TEXT else None
            name = os.fsdecode(path) if path is not None else None
            results.append(SearchResult(rank, score, kind, item_id, name, text, raw_path=path))
        return results

    def count(self, target: str = "images") -> int:
        """How many items of ``target`` a search can return now: from the caught-up index (the same
        view `search` uses), so a long-running reader counts without a table scan."""
        kind = _kind(target)
        return self.indexes.view(kind, self._follow_writers()).ntotal

    def preload(self) -> None:
        """For a long-lived process (serve, a notebook answering many queries): bring the
        memory-mapped indexes' pages in now, so that early searches pay no page faults (see
        `VectorIndex.touch`). Costs about one exact scan; a one-shot search does not call it."""
        for kind in (IMAGE, TEXT):
            self.indexes.view(kind, self._follow_writers()).touch()

    def _follow_writers(self) -> int:
        """The store's generation; when it moved, another process may have changed the model
        (use-model, finetune --apply): then it is reloaded."""
        gen = self.store.generation
        if gen != self._seen_generation:
            self._seen_generation = gen
            if self._model is not None and self.spec is not None and self._model.spec != self.spec:
                self._model = None
        return gen

    def _vector_query(self, vector: Any, dim: int | None = None) -> np.ndarray:
        """``vector`` checked and normalised; ``dim`` when the caller knows it (saves a read)."""
        q = np.asarray(vector, np.float32).reshape(-1)
        dim = dim or self.store.dim
        if dim and q.shape[0] != dim:
            raise ClipdexError(f"query vector has dimension {q.shape[0]}, the library's is {dim}")
        norm = float(np.linalg.norm(q))
        if not np.isfinite(norm) or norm == 0:
            raise ClipdexError("query vector must be finite and non-zero")
        return q / norm

    def _composed_query(self, terms: Terms, weights: Weights) -> np.ndarray:
        """Encode every term (texts in one batch, images in one batch) and compose them."""
        import torch

        from clipdex.index.scan import display_path
        from clipdex.retrieval.decode import DecodeError, load_and_preprocess
        from clipdex.retrieval.embed import encode_image_batch, encode_texts
        from clipdex.textfiles import require_file

        w = terms.weights(weights)  # before any encoding: a bad weight costs nothing
        lm = self.model
        texts = encode_texts(lm, terms.text + terms.not_text)
        pixels = []
        for path in terms.image + terms.not_image:
            require_file(path, "query image")  # before opening: a FIFO would block
            try:
                pixels.append(load_and_preprocess(path, lm.preprocess, lm.image_size))
            except DecodeError as e:
                shown = display_path(os.fsencode(path))
                raise ClipdexError(f"cannot read query image {shown}: {e}") from e
        images = encode_image_batch(lm, torch.stack(pixels)) if pixels else texts[:0]
        nt, ni = len(terms.text), len(terms.image)
        vectors = np.concatenate([texts[:nt], images[:ni], texts[nt:], images[ni:]])
        return compose(vectors, terms.signs(), w)

    def duplicates(
        self, threshold: float = 0.95, under: Sequence[str | os.PathLike | bytes] | str | None = None
    ) -> list[list[DuplicateItem]]:
        """Groups of near-identical images (cosine >= ``threshold`` between neighbours, joined
        transitively), optionally only among images under some folders. Largest group first; in
        a group the best quality first (most pixels, then largest file), each with its score
        against that first image. Uses the stored vectors only: no model, no decoding."""
        from clipdex.index.duplicates import find_duplicates
        from clipdex.retrieval.decode import image_size

        if not -1.0 <= threshold <= 1.0:
            raise ValueError("threshold must lie between -1 and 1 (a cosine similarity)")
        roots = [under] if isinstance(under, (str, bytes, os.PathLike)) else list(under or [])
        return find_duplicates(self.store, threshold, roots, dims_of=image_size)

    def similar(self, item: int | str | os.PathLike | bytes, k: int = 10) -> list[SearchResult]:
        """More like a stored item, ranked by its stored vector (no model, no re-encoding).

        The item itself comes first, then the others of its modality by score, ties by id.
        ``item`` is an id, or a path of an image in the library (see ``resolve_item``).
        """
        from dataclasses import replace

        from clipdex.index.scan import display_path

        if k < 1:
            raise ValueError("k must be at least 1")
        item_id = self.resolve_item(item)
        rec = self.store.item_record(item_id)
        vec = self.store.get_vectors([item_id])[0]
        hits = self.search(vector=vec, k=k + 1, target=rec["kind"] + "s")
        # Built here rather than found among the hits: exact duplicates with lower ids may fill them.
        path = rec["path"] if rec["kind"] == IMAGE else None
        if rec["image_id"] is not None:
            path = (self.store.item_record(rec["image_id"]) or {}).get("path")
        first = SearchResult(
            1, float(np.dot(vec, vec) / np.linalg.norm(vec)), rec["kind"], item_id,
            display_path(path) if path is not None else None, rec["text"] if rec["kind"] == TEXT else None,
        )  # fmt: skip
        ranked = [first] + [h for h in hits if h.id != item_id][: k - 1]
        return [replace(h, rank=n) for n, h in enumerate(ranked, start=1)]

    def resolve_item(self, item: int | str | os.PathLike | bytes) -> int:
        """An item id from an id or an image path: all digits and not an existing file is an id;
        a path must be an image in the library. Raises ClipdexError otherwise."""
        from clipdex.index.scan import display_path

        if isinstance(item, str) and item.isascii() and item.isdigit() and not os.path.isfile(item):
            item = int(item)
        if isinstance(item, int):
            if not 0 <= item < 2**63 or self.store.item_record(item) is None:
                raise ClipdexError(f"no item with id {item} in the library at {self.path}")
            return item
        raw = os.fsencode(os.path.expanduser(item) if isinstance(item, str) else item)
        for candidate in (os.path.abspath(raw), os.path.realpath(raw)):
            found = self.store.image_id_by_path(candidate)
            if found is not None:
                return found
        raise ClipdexError(f"{display_path(raw)} is not in the library at {self.path}")

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
        counts = self.store.counts()
        listed = self.store.vector_files()
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
            "failed_files": self.store.count_failures(),
            "counts": counts,
            "indexes": indexes,
            "generation": self.store.generation,
            "schema_version": int(self.store.get_meta("schema_version") or 0),
            "bytes_on_disk": sum(files.values()) + model_bytes + vector_bytes,
            "files": files,
            # Large-library mode: vectors as float16 rows of files in vectors/ (see clipdex.index.ondisk).
            "mode": "large-library" if self.store.large_mode else "normal",
            "vector_files": {"count": len(listed), "bytes": vector_bytes},
        }

    def check(self, repair: bool = False) -> dict:
        """``{"healthy", "problems": [{"kind", "detail"}], "repaired"}``; see `clipdex.check`."""
        from clipdex.check import check_library

        return check_library(self, repair).to_dict()

    def caption_pairs(self) -> list[tuple[str, str]]:
        """(image path, caption) pairs already in the library (sidecar captions), for fine-tuning."""
        return [(os.fsdecode(p), t) for p, t in self.store.caption_pairs()]

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
