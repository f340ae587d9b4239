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
from clipdex.index.indexset import IndexSet
from clipdex.index.lock import WriterLock
from clipdex.index.store import DB_NAME, IMAGE, TEXT, Store
from clipdex.results import IndexStats, SearchResult
from clipdex.retrieval.models import LoadedModel, ModelSpec, load_model, resolve_spec

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


class Library:
    """A clipdex library. Keeps its model and indexes loaded, so repeated searches are cheap.

    >>> lib = Library.open("~/photos-lib", create=True, model="local-dir:./tiny")
    >>> lib.index("~/Pictures")
    >>> for hit in lib.search(text="a dog on a beach", k=5):
    ...     print(hit.score, hit.path)
    """

    def __init__(
        self, path: Path, store: Store, requested: ModelSpec | None, device: str = "auto",
        warn: Warn | None = None,
    ):  # fmt: skip
        self.path = path
        self.store = store
        self.requested = requested
        self.device = device
        self._model: LoadedModel | None = None
        self._seen_generation: int | None = None
        self.indexes = IndexSet(path, store, warn or log.warning)

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
    ) -> Library:
        """Open the library at ``path`` (default: ``default_library_dir()``).

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
        return cls(lib_dir, store, requested, device, warn)

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

    def writer_model(self, reembed: bool = False, problem: Problem | None = None) -> LoadedModel:
        """Model for a writing command: check, load, record (first time) or re-embed (on change)."""
        self.check_model(reembed)
        target = self._target_spec()
        stored = self.spec
        if self._model is None or self._model.spec != target:
            self._model = load_model(target, self.device)
        if stored is None:
            self._record_model(self._model)
        elif target != stored or reembed:
            self.reembed(self._model, problem=problem)
        return self._model

    # ---- writing --------------------------------------------------------------------------
    def index(
        self,
        folders: str | os.PathLike | Sequence[str | os.PathLike | bytes],
        *,
        include_hidden: bool = False,
        reembed: bool = False,
        batch_size: int = 32,
        workers: int | None = None,
        exact_decode: bool = False,
        index_type: str | None = None,
        problem: Problem | None = None,
        progress: Progress | None = None,
    ) -> IndexStats:
        """Bring the library in line with ``folders``: add new, re-embed changed, drop deleted files."""
        from clipdex.index.scan import check_folders
        from clipdex.indexer import IndexRun

        folders = [folders] if isinstance(folders, (str, bytes, os.PathLike)) else list(folders)
        folders = [os.path.expanduser(f) if isinstance(f, str) else f for f in folders]
        check_folders(folders)  # before anything is touched: a missing FOLDER removes nothing
        if index_type is not None:
            from clipdex.index.ann import KINDS

            if index_type not in ("auto", *KINDS):
                raise ClipdexError(f"unknown index type '{index_type}' (choose auto, {', '.join(KINDS)})")
        with self.writing():
            if index_type is not None:
                self.indexes.set_index_type(index_type)
            stored = self.spec
            if stored is None or reembed or self._target_spec() != stored:
                self.writer_model(reembed, problem)  # load now: it records or re-embeds
            indexes: dict[str, Any] = {}

            def load_indexes() -> None:
                # Only a run that writes needs them (a big index takes seconds to load); they are
                # loaded before its first commit, so the changes then apply to them incrementally.
                indexes.update({kind: self.indexes.get(kind) for kind in (IMAGE, TEXT)})

            run = IndexRun(
                self.store, lambda: self.model, batch_size=batch_size, workers=workers,
                exact_decode=exact_decode, problem=problem, progress=progress, before_write=load_indexes,
            )  # fmt: skip
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

    def add_texts(self, texts: Sequence[str], source: str = "add-texts") -> list[int]:
        """Store and index free texts (searchable with ``target="texts"``); returns their ids."""
        from clipdex.retrieval.embed import encode_texts

        texts = [t.strip() for t in texts if t and t.strip()]
        with self.writing():
            lm = self.writer_model()
            self.indexes.get(TEXT)
            ids: list[int] = []
            for start in range(0, len(texts), 1024):
                chunk = texts[start : start + 1024]
                vecs = encode_texts(lm, chunk)
                new = self.store.insert(TEXT, source, vecs, texts=chunk)
                self.indexes.apply(TEXT, (new, vecs), [])
                self.indexes.maybe_save()
                ids += new
            self.indexes.finish()
        return ids

    def import_embeddings(
        self,
        vectors_path: str | os.PathLike,
        metadata_path: str | os.PathLike,
        modality: str | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Store vectors computed elsewhere (``.npy`` + metadata); see `clipdex.importer`."""
        from clipdex.importer import import_embeddings

        return import_embeddings(self, vectors_path, metadata_path, modality, progress)

    def reembed(
        self, lm: LoadedModel, problem: Problem | None = None, progress: Progress | None = None
    ) -> int:
        """Re-embed every item with ``lm`` and make it the library's model.

        New vectors go to a pending table and are swapped in at the end in one transaction, so
        searches keep working on the old vectors meanwhile and an interrupted run resumes.
        """
        from clipdex.reembed import reembed_all

        n = reembed_all(self.store, lm, problem=problem, progress=progress)
        self.indexes.forget()
        for kind in (IMAGE, TEXT):
            self.indexes.get(kind)
        self.indexes.finish()
        return n

    # ---- searching ------------------------------------------------------------------------
    def search(
        self,
        text: str | None = None,
        image: str | os.PathLike | bytes | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        k: int = 10,
        target: str = "images",
    ) -> list[SearchResult]:
        """Best ``k`` items of ``target`` ("images" or "texts") for one query, best first."""
        from clipdex.index.scan import display_path

        if sum(q is not None for q in (text, image, vector)) != 1:
            raise ValueError("give exactly one of text=, image=, vector=")
        if k < 1:
            raise ValueError("k must be at least 1")
        kind = {"images": IMAGE, "texts": TEXT, "image": IMAGE, "text": TEXT}.get(target)
        if kind is None:
            raise ValueError(f"target must be 'images' or 'texts', not {target!r}")
        index = self.indexes.view(kind, self._follow_writers())  # one generation read when nothing changed
        if index.ntotal == 0:
            what = "images" if kind == IMAGE else "texts"
            raise ClipdexError(f"the library at {self.path} has no {what} to search")
        query = self._query_vector(text, image, vector)
        hits = index.search(query[None], k, self.store.get_vectors)[0]
        items = self.store.items([i for i, _ in hits])
        linked = self.store.items([it.image_id for it in items.values() if it.image_id is not None])
        results = []
        for rank, (item_id, score) in enumerate(hits, start=1):
            it = items[item_id]
            path = it.path if kind == IMAGE else (linked[it.image_id].path if it.image_id in linked else None)
            shown = display_path(path) if path is not None else None
            results.append(SearchResult(rank, score, kind, item_id, shown, it.text if kind == TEXT else None))
        return results

    def _follow_writers(self) -> int:
        """The store's generation; when it moved, another process may have changed the model
        (use-model, finetune --apply): then it is reloaded."""
        gen = self.store.generation
        if gen != self._seen_generation:
            self._seen_generation = gen
            if self._model is not None and self.spec is not None and self._model.spec != self.spec:
                self._model = None
        return gen

    def _query_vector(self, text: Any, image: Any, vector: Any) -> np.ndarray:
        if vector is not None:
            q = np.asarray(vector, np.float32).reshape(-1)
            dim = self.store.dim
            if dim and q.shape[0] != dim:
                raise ClipdexError(f"query vector has dimension {q.shape[0]}, the library's is {dim}")
            norm = float(np.linalg.norm(q))
            if not np.isfinite(norm) or norm == 0:
                raise ClipdexError("query vector must be finite and non-zero")
            return q / norm
        from clipdex.retrieval.embed import encode_image_batch, encode_texts

        lm = self.model
        if text is not None:
            return encode_texts(lm, [text])[0]
        from clipdex.index.scan import display_path
        from clipdex.retrieval.decode import DecodeError, load_and_preprocess

        try:
            pixels = load_and_preprocess(image, lm.preprocess, lm.image_size)
        except DecodeError as e:
            raise ClipdexError(f"cannot read query image {display_path(os.fsencode(image))}: {e}") from e
        return encode_image_batch(lm, pixels[None])[0]

    # ---- reporting ------------------------------------------------------------------------
    def info(self) -> dict:
        """Model, dimension, counts by kind, index types, paths and sizes on disk."""
        spec = self.spec
        files = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.is_file()}
        models = self.path / "models"
        model_bytes = (
            sum(f.stat().st_size for f in models.rglob("*") if f.is_file()) if models.is_dir() else 0
        )
        counts = self.store.counts()
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
            "counts": counts,
            "indexes": indexes,
            "generation": self.store.generation,
            "schema_version": int(self.store.get_meta("schema_version") or 0),
            "bytes_on_disk": sum(files.values()) + model_bytes,
            "files": files,
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
        progress: Progress | None = None,
    ) -> int:  # fmt: skip
        """Make ``model`` (e.g. a fine-tuned local-dir) the library's model; re-embeds everything."""
        spec = resolve_spec(model, pretrained)
        with self.writing():
            lm = (
                self._model
                if self._model is not None and self._model.spec == spec
                else load_model(spec, self.device)
            )
            n = self.reembed(lm, problem=problem, progress=progress)
            self._model, self.requested = lm, None
        return n
