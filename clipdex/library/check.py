"""`clipdex check [--repair]`: is the library consistent, and fix what is derived or left over.

Checks: SQLite's integrity_check, the schema version, FAISS ids == SQLite ids per kind (the file
caught up from the change log, as a reader sees it), every vector finite, unit-norm and of the
library's dimension, no orphan captions (image gone), no leftover temporary files (a killed
fine-tune's ``models/.finetune-…``, a killed save's ``.images.faiss.…`` or an ``images-….faiss``
that no index file names, a killed on-disk build's ``.images.build-…``) and no pending-table rows
that no re-embedding will use. In large-library mode also: every vector file in ``vectors/``
present and of its listed size and shape (a missing one is lost data: the report names its
items), and no unlisted file there (a write that died before its commit). A repair rebuilds the
FAISS files (the on-disk ones from the vector files), removes leftovers and unlisted vector files
and upgrades an old schema; it never removes user
data (a damaged vector is reported, not dropped).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipdex.index.faiss.index_set import IndexSet
from clipdex.index.store.database import Store
from clipdex.index.store.schema import DB_NAME, SCHEMA_VERSION
from clipdex.index.store.vector_files import VectorFileError, fingerprint, open_vector_file
from clipdex.kinds import IMAGE, TEXT

if TYPE_CHECKING:
    from clipdex.library.parts import Parts

NORM_TOLERANCE = 1e-3
CHUNK = 65536


@dataclass
class Report:
    problems: list[dict] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def add(self, kind: str, detail: str) -> None:
        self.problems.append({"kind": kind, "detail": detail})

    def to_dict(self) -> dict:
        return {"healthy": self.healthy, "problems": self.problems, "repaired": self.repaired}


def check_library(parts: Parts, repair: bool = False) -> Report:
    """Check ``parts``; with ``repair``, fix what can be fixed (under the writer lock), then check
    again, and export the model's ONNX graphs where they are missing (derived files, like the
    FAISS ones: their absence is not a problem, a reader encodes with torch meanwhile)."""
    report = _check(parts.path, parts.store)
    if not repair:
        return report
    repaired: list[str] = []
    if not report.healthy:
        with parts.writing():
            repaired = _repair(parts, report)
        parts.indexes.forget()
        report = _check(parts.path, parts.store)
    report.repaired = repaired + _export_graphs(parts)
    return report


def _export_graphs(parts: Parts) -> list[str]:
    from clipdex.errors import ModelError
    from clipdex.library.runtime import graphs_dir
    from clipdex.retrieval.encoders import TorchEncoder
    from clipdex.retrieval.onnx.encoder import read_manifest

    models = parts.models
    spec, precision = models.stored, models.precision
    if models.runtime == "torch" or spec is None:
        return []
    manifest = read_manifest(graphs_dir(parts.path, spec))
    if manifest is not None and precision in manifest.get("precisions", []):
        return []
    with parts.writing():
        with parts.store.transaction():
            parts.store.meta.set("onnx_failed", None)  # a repair tries again
        try:
            enc = models.writer_encoder()
        except ModelError as e:
            return [f"did not export ONNX graphs: {e}"]
    if isinstance(enc, TorchEncoder):
        return ["did not export ONNX graphs: the model cannot run on ONNX Runtime (said above)"]
    models.forget_runtime()
    return [f"exported ONNX graphs for model {spec} ({precision})"]


def _check(folder: Path, store: Store) -> Report:
    report = Report()
    errors = store.integrity_errors()
    if errors:
        report.add("integrity", "; ".join(errors[:5]))
        return report  # nothing else can be trusted
    if store.schema_version < SCHEMA_VERSION:
        report.add("schema", f"schema version {store.schema_version} is older than {SCHEMA_VERSION} "
                             "(`clipdex check --repair` upgrades it)")  # fmt: skip
    lost = _check_vector_files(store, report)
    _check_vectors(store, report, lost)
    if lost:
        report.add("index", "not checked: vector files are missing or damaged")
    else:
        _check_indexes(folder, store, report)
    orphans = _orphan_texts(store)
    if orphans:
        report.add("orphan_text", f"{len(orphans)} captions whose image is gone (ids {_few(orphans)})")
    leftovers = _leftovers(folder)
    if leftovers:
        report.add(
            "leftover", f"{len(leftovers)} temporary files or folders: {_few([p.name for p in leftovers])}"
        )
    pending = _stray_pending(store)
    if pending:
        report.add("pending", f"{len(pending)} re-embedded vectors no re-embedding will use")
    if store.has_table("words"):
        stale = store.words.stale()
        if stale:
            report.add("words", f"the word index is out of step with {stale} items")
    return report


def _check_vector_files(store: Store, report: Report) -> set[int]:
    """Large-library mode's files: each listed one readable as listed, none unlisted. Returns the
    ids of the missing or damaged ones."""
    lost: set[int] = set()
    for fid, name, rows, dim, size, print_ in store.vector_files.listed_with_fingerprints():
        path = store.vector_files.folder / name
        try:
            open_vector_file(path, rows, dim, size)
            if print_ is not None and fingerprint(path) != print_:
                raise VectorFileError(
                    f"vector file {path} changed since it was stored (an imported shard rewritten in "
                    "place? it is hard-linked: rewrite shards under a new name, as `clipdex embed` does)"
                )
        except VectorFileError as e:
            lost.add(fid)
            items = store.items.ids_in_vector_file(fid)
            report.add("vector_file", f"{e}; {len(items)} items had their vectors there (ids {_few(items)}): "
                                      "`clipdex index --reembed` re-creates the images whose files exist, "
                                      "re-import the others")  # fmt: skip
    orphans = store.vector_files.orphans()
    if orphans:
        report.add("orphan_vector_file", f"{len(orphans)} files in {store.vector_files.folder} that the "
                                         f"database does not list: {_few(orphans)}")  # fmt: skip
    return lost


def _check_vectors(store: Store, report: Report, lost: set[int] = frozenset()) -> None:
    """Finite, unit-norm, right length: one vectorised pass in chunks (bounded memory). Vectors in
    vector files (float16, renormalised when read) are checked for being finite and non-zero."""
    dim = store.dim
    if dim is None:
        return
    bad_len: list[int] = []
    bad: list[int] = []
    for rows in store.vectors.iter_stored(CHUNK):
        in_files = [(i, f, r) for i, b, f, r in rows if b is None and f is not None and f not in lost]
        if in_files:
            ids = np.array([i for i, _, _ in in_files], np.int64)
            vecs = store.vector_files.read(
                np.array([f for _, f, _ in in_files]), np.array([r for _, _, r in in_files])
            )
            bad += ids[~_unit(vecs)].tolist()
        rows = [(i, b) for i, b, f, _ in rows if f is None or b is not None]
        good_rows = [(i, b) for i, b in rows if b is not None and len(b) == 4 * dim]
        bad_len += [i for i, b in rows if b is None or len(b) != 4 * dim]
        if not good_rows:
            continue
        ids = np.fromiter((i for i, _ in good_rows), np.int64, len(good_rows))
        vecs = np.frombuffer(b"".join(b for _, b in good_rows), np.float32).reshape(-1, dim)
        bad += ids[~_unit(vecs)].tolist()
    if bad_len:
        report.add(
            "vector",
            f"{len(bad_len)} vectors are not {dim}-d (ids {_few(bad_len)}); re-index or re-import them",
        )
    if bad:
        report.add("vector", f"{len(bad)} vectors are not finite unit vectors (ids {_few(bad)}); "
                             "re-index or re-import them")  # fmt: skip


def _unit(vecs: np.ndarray) -> np.ndarray:
    """Which rows are finite unit vectors (norm within NORM_TOLERANCE of 1)."""
    with np.errstate(all="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", vecs, vecs, dtype=np.float64))
    return np.isfinite(norms) & (np.abs(norms - 1) <= NORM_TOLERANCE)


def _check_indexes(folder: Path, store: Store, report: Report) -> None:
    indexes = IndexSet(folder, store)
    for kind in (IMAGE, TEXT):
        problem = indexes.problem(kind)
        if problem is not None:
            report.add("index", problem)
            continue
        idx = indexes.view(kind)
        want = store.items.ids(kind)
        have = idx.ids()
        if not np.array_equal(have, want):
            missing = np.setdiff1d(want, have)
            extra = np.setdiff1d(have, want)
            dupes = len(have) - len(np.unique(have))
            report.add("index", f"the {kind} index differs from the database: {len(missing)} missing, "
                                f"{len(extra)} extra, {dupes} duplicated ids")  # fmt: skip


def _orphan_texts(store: Store) -> list[int]:
    return store.items.orphan_caption_ids()


def _leftovers(folder: Path) -> list[Path]:
    found = [p for p in folder.glob(f".{DB_NAME}.new-*")]
    for kind in (IMAGE, TEXT):  # a FAISS save, an on-disk index build killed midway
        found += IndexSet.leftovers(folder, kind)
    models = folder / "models"
    if models.is_dir():
        found += [p for p in models.iterdir() if p.name.startswith(".")]
    return sorted(found)


def _stray_pending(store: Store) -> list[int]:
    return store.pending.stray_ids()


def _repair(parts: Parts, report: Report) -> list[str]:
    """Fix what the report found; returns what was done (one line each)."""
    store, done = parts.store, []
    kinds = {p["kind"] for p in report.problems}
    if "schema" in kinds:
        done.append(f"upgraded the schema to version {SCHEMA_VERSION}")  # make_writable migrated it
    if "orphan_text" in kinds:
        orphans = _orphan_texts(store)
        sidecars = store.items.sidecar_ids(orphans)
        store.items.delete(sidecars)  # a sidecar caption belongs to its image: it is re-read from the .txt
        store.items.unlink_from_images(orphans)
        done.append(
            f"removed {len(sidecars)} orphan sidecar captions, unlinked {len(orphans) - len(sidecars)} texts"
        )
    if "leftover" in kinds:
        for p in _leftovers(parts.path):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            done.append(f"removed {p}")
    if "pending" in kinds:
        stray = _stray_pending(store)
        store.pending.remove(stray)
        done.append(f"removed {len(stray)} stray pending vectors")
    if "orphan_vector_file" in kinds:
        gone = store.vector_files.remove_orphans()
        done.append(f"removed {len(gone)} unlisted files from {store.vector_files.folder}")
    if "words" in kinds or "schema" in kinds:
        with store.transaction():
            n = store.words.rebuild()
        done.append(f"rebuilt the word index ({n} items)")
    if "vector_file" in kinds:
        done.append("did not rebuild the indexes: vector files are missing or damaged (see problems)")
    elif "index" in kinds:
        parts.indexes.forget()
        for kind in (IMAGE, TEXT):
            parts.indexes.path(kind).unlink(missing_ok=True)
            parts.indexes.get(kind)  # rebuilt from the database and saved
        done.append("rebuilt the FAISS indexes")
    return done


def _few(items: list) -> str:
    shown = ", ".join(str(i) for i in items[:5])
    return shown + (", …" if len(items) > 5 else "")
