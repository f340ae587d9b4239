"""FAISS index files derived from the store: build, search, incremental update, atomic save.

A file records the database generation it reflects. A reader brings a loaded index up to date
with `apply_changes` in memory only: the loaded base is never modified; removed or replaced ids
become tombstones filtered at search and current vectors go to a small flat delta index. A writer
folds the same changes into the base (`fold=True`) before saving. Scores handed out are exact
cosine similarities of the stored float32 vectors, best first, ties broken by ascending id.
"""

from __future__ import annotations

import json
import secrets
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clipdex.index.durable import write_atomically
from clipdex.index.faiss import build, files, gpu
from clipdex.index.faiss.ann import AnnIndex
from clipdex.index.faiss.runtime import faiss_module

MAGIC = b"CLIPDEX-FAISS-4\n"  # 4: a head file naming a FAISS data file (memory-mappable)
LEGACY_MAGIC = b"CLIPDEX-FAISS-3\n"  # 3: head and FAISS index in one stream (still read)
# Kinds whose mapped data one exhaustive search pass reads whole (see VectorIndex.touch).
TOUCHED_KINDS = ("flat", "fp16", "sq8", "ivf-flat", "ivf-fp16", "ivf-pq")


class VectorIndex:
    """An inner-product index over unit vectors, keyed by SQLite ids: an `ann.AnnIndex` (flat for
    small collections, tuned IVF beyond; see clipdex.index.faiss.ann) plus the generation it reflects."""

    def __init__(
        self, dim: int, index: AnnIndex | None = None, generation: int = 0, info: dict | None = None
    ):
        self.dim = dim
        self.ann = index if index is not None else build.build(np.zeros((0, dim), np.float32), np.zeros(0))
        if info:
            self.ann.info.update(info)
        self.generation = generation
        self._gpu: AnnIndex | None = None
        self.delta: AnnIndex | None = None  # reader catch-up: current vectors of changed ids
        self.tombs: set[int] = set()  # reader catch-up: base ids removed or replaced since
        self.exact_fallback = False  # built in memory from SQLite because the file was unusable
        self.fallback_reason: str | None = None  # why it was unusable ("missing", "damaged", …)
        self.mapped = False  # loaded memory-mapped (a reader's): the base must never change
        # Search on a GPU copy (when FAISS sees a GPU). Off by default: cloning a large index costs
        # more than one CPU search, so only long-running processes (serve) turn it on.
        self.use_gpu = False

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        dim: int,
        generation: int,
        kind: str = "auto",
        tune_queries: np.ndarray | None = None,
    ) -> VectorIndex:
        """Index type chosen by policy.choose_kind (or forced by `kind`), search parameters tuned
        (on `tune_queries` when given: a sample of the queries this index will really answer)."""
        vectors = np.asarray(vectors, np.float32).reshape(len(ids), dim)
        built = build.build(vectors, np.asarray(ids, np.int64), kind, tune_queries=tune_queries)
        return cls(dim, built, generation)

    @property
    def info(self) -> dict:
        """Type, params, recall_at_10, build_seconds, bytes_per_vector… (see build.build)."""
        return self.ann.info

    @property
    def ntotal(self) -> int:
        """Live vectors, catch-up included."""
        return self.ann.ntotal - len(self.tombs) + (self.delta.ntotal if self.delta is not None else 0)

    @property
    def overlay_size(self) -> int:
        """How much a reader has caught up in memory since its base (delta + tombstones)."""
        return len(self.tombs) + (self.delta.ntotal if self.delta is not None else 0)

    def ids(self) -> np.ndarray:
        """Every live id, ascending (for `clipdex check`)."""
        base = self.ann.ids()
        dead = np.fromiter(self.ann.removed | self.tombs, np.int64)
        live = [base[~np.isin(base, dead)]] if len(dead) else [base]
        if self.delta is not None:
            live.append(self.delta.ids())
        return np.sort(np.concatenate(live))

    def apply_changes(
        self,
        ops: list[tuple[str, int, int]],
        fetch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
        generation: int,
        fold: bool = False,
    ) -> None:
        """Catch up with the change log: ``ops`` are (op, first id, last id) in the order written,
        ``fetch(ids)`` gives the (ids, vectors) of those that exist now.

        An id whose first op is "remove" was in the index before; every id touched takes its
        current vector (or none). ``fold`` (a writer) changes the base; else (a reader) the base
        stays as loaded, with tombstones and a delta index. May raise ann.NeedsRebuild when folding.
        """
        if ops:
            ids = np.concatenate([np.arange(a, b + 1, dtype=np.int64) for _, a, b in ops])
            removes = np.concatenate([np.full(b - a + 1, op == "remove") for op, a, b in ops])
            touched, first = np.unique(ids, return_index=True)
            was_there = touched[removes[first]]
            live_ids, live_vecs = fetch(touched)
            if fold:
                self.fold()
                self.remove(was_there)
                self.add(live_ids, live_vecs)
            else:
                self._overlay(touched, was_there, live_ids, live_vecs)
        self.generation = generation

    def _overlay(self, touched: np.ndarray, was_there: np.ndarray, live_ids: np.ndarray,
                 live_vecs: np.ndarray) -> None:  # fmt: skip
        in_delta = set()
        if self.delta is not None:
            in_delta = set(self.delta.ids().tolist())
            self.delta.remove(touched)
        self.tombs.update(i for i in was_there.tolist() if i not in in_delta)
        if len(live_ids):
            if self.delta is None:
                self.delta = build.build(np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), "flat")
            self.delta.add(live_vecs, live_ids)

    def fold(self) -> None:
        """Move a reader's catch-up into the base (before a writer changes or saves it)."""
        if self.mapped and (self.tombs or self.delta is not None):
            raise RuntimeError("a memory-mapped index is read-only: load it unmapped to change it")
        if self.tombs:
            self.ann.remove(np.fromiter(self.tombs, np.int64, len(self.tombs)))
            self.tombs = set()
        if self.delta is not None:
            ids = self.delta.ids()
            vecs = np.vstack([self.delta.index.reconstruct(int(i)) for i in ids]) if len(ids) else None
            self.delta = None
            if vecs is not None:
                self.add(ids, vecs)
        self._gpu = None

    def stale(self) -> bool:
        """Worth rebuilding from the store (grown well past what it was trained on, many removals)."""
        return self.ann.stale()

    def add(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        if len(ids):
            self._writable()
            self.ann.add(vectors, np.asarray(ids, np.int64))
            self._gpu = None

    def remove(self, ids: np.ndarray | list[int]) -> None:
        if len(ids):
            self._writable()
            self.ann.remove(np.asarray(ids, np.int64))
            self._gpu = None

    def _writable(self) -> None:
        # FAISS aborts the process (not an exception) on a write into a mapped array.
        if self.mapped:
            raise RuntimeError("a memory-mapped index is read-only: load it unmapped to change it")

    def search(
        self,
        queries: np.ndarray,
        k: int,
        get_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[list[tuple[int, float]]]:
        """Top-k (id, exact cosine) per query; ties by ascending id.

        Scores are recomputed from `get_vectors` (the stored float32 vectors), also when the index
        is approximate or compressed; without it only a flat index can supply its own vectors.
        `allowed` restricts the search to those ids (a FAISS ID selector, on the CPU index).
        """
        if self.ntotal == 0:
            return [[] for _ in range(len(queries))]
        if get_vectors is None:
            get_vectors = self._own_vectors
        searcher = self.ann if allowed is not None else self._searcher()  # GPU indexes lack selectors
        scores, ids = searcher.search(queries, k, get_vectors, allowed, self.tombs)
        if self.delta is not None and self.delta.ntotal:
            d_scores, d_ids = self.delta.search(queries, k, get_vectors, allowed)
            scores, ids = np.hstack([scores, d_scores]), np.hstack([ids, d_ids])
            key = np.where(ids >= 0, ids, np.iinfo(np.int64).max)
            order = np.lexsort((key, -scores), axis=-1)[:, :k]
            scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        return [[(int(i), float(s)) for i, s in zip(ir, sr) if i >= 0] for ir, sr in zip(ids, scores)]

    def touch(self) -> None:
        """Fault every page of a memory-mapped base into this process now, with one exhaustive
        pass (an IVF index probes all its lists once). Until a page has been touched, a search that
        reaches it pays a page fault (~10% of a warm 1M search); a long-lived process (serve) calls
        this once, a one-shot search must not (it would read the whole file)."""
        if not self.mapped or self.ann.kind not in TOUCHED_KINDS:
            return  # hnsw: no exhaustive pass; binary: small; ivf-pq-ondisk: mapped by design
        if self.ann.ntotal == 0:
            return
        query = np.zeros((1, self.dim), np.float32)
        query[0, 0] = 1.0
        if self.ann.kind.startswith("ivf"):
            ivf = faiss_module().extract_index_ivf(self.ann.index)
            nprobe, ivf.nprobe = ivf.nprobe, ivf.nlist
            try:
                self.ann.index.search(query, 1)
            finally:
                ivf.nprobe = nprobe
        else:
            self.ann.index.search(query, 1)

    def _own_vectors(self, ids: np.ndarray) -> np.ndarray:
        """A flat index's vectors of ``ids``: a reader's catch-up (delta) holds the current ones
        of the ids it replaced or added."""
        if self.ann.kind != "flat":
            raise ValueError(f"a {self.ann.kind} index needs get_vectors to re-rank exactly")
        fresh = set(self.delta.ids().tolist()) if self.delta is not None else set()
        return np.vstack([(self.delta if i in fresh else self.ann).index.reconstruct(int(i)) for i in ids])

    def _searcher(self) -> AnnIndex:
        if self.use_gpu and faiss_module().get_num_gpus() > 0:
            if self._gpu is None:
                self._gpu = gpu.to_gpu(self.ann)
            return self._gpu
        return self.ann

    # ---- persistence --------------------------------------------------------------------
    # Two files per index: PATH (e.g. images.faiss: the generation, the dimension, the name of the
    # data file, the small head of clipdex.index.faiss.files) and the data file it names
    # (images-<random>.faiss: the FAISS index in FAISS's own format, so that readers can memory-map
    # it). A save writes a new data file, then replaces PATH atomically, then deletes the older
    # data files: a reader that has one mapped keeps it (the inode lives on); one caught between
    # the two opens retries.
    def save(self, path: Path) -> None:
        """Atomic: a new data file, then PATH replaced (temp file in the same folder, fsync,
        rename), then the older data files removed."""
        self.fold()
        data = path.with_name(f"{path.stem}-{secrets.token_hex(8)}.faiss")
        try:
            files.write_index_file(self.ann, data)
            head = {"generation": self.generation, "dim": self.dim, "data": data.name}
            st = data.stat()
            header = json.dumps({**head, "size": st.st_size}).encode()

            def write_head(f) -> None:
                f.write(MAGIC + struct.pack("<Q", len(header)) + header)
                files.write_head(self.ann, f)

            # The head's permissions are the data file's (the umask's), as a new file's would be.
            write_atomically(path, write_head, mode=st.st_mode & 0o777)
        except BaseException:
            data.unlink(missing_ok=True)
            raise
        for old in data_files(path):
            if old != data:
                old.unlink(missing_ok=True)

    @staticmethod
    def read_header(path: Path) -> dict | None:
        """``{"generation", "dim", "data", "size"}`` of a saved index without reading it (None:
        missing or unreadable, or its data file is missing or of another size)."""
        try:
            with open(path, "rb") as f:
                header = _read_header(f)
            if header is not None and "data" in header and not _data_intact(path, header):
                return None
            return header
        except (OSError, ValueError, struct.error):
            return None

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> VectorIndex | None:
        """The saved index, or None when missing or unreadable (the caller rebuilds). ``mmap``
        (readers): the FAISS data is memory-mapped, not read, and the index is read-only."""
        for _ in range(3):  # a writer may replace the files between our two opens
            try:
                with open(path, "rb", buffering=1 << 20) as f:
                    header = _read_header(f)
                    if header is None:
                        return None
                    if "data" not in header:  # a version 3 file: one stream, read whole
                        return cls(header["dim"], files.read(f), header["generation"])
                    head = files.read_head(f)
                if not _data_intact(path, header):
                    if path.with_name(header["data"]).exists():
                        return None  # damaged (FAISS must never map a truncated file)
                    raise FileNotFoundError(header["data"])
                index = files.read_index_file(head, path.with_name(header["data"]), mmap)
            except FileNotFoundError:
                if not path.exists():
                    return None
                continue
            except (OSError, ValueError, KeyError, struct.error):
                return None
            loaded = cls(header["dim"], index, header["generation"])
            loaded.mapped = mmap
            return loaded
        return None


def data_files(path: Path) -> list[Path]:
    """Every data file of the index at PATH, current or left behind (``images-*.faiss``)."""
    return sorted(path.parent.glob(f"{path.stem}-*.faiss"))


def stray_files(path: Path) -> list[Path]:
    """What a save killed midway left next to the index at PATH: its temporary head
    (``.images.faiss.*``), and data files the head does not name (only while the head is usable:
    without one, the rebuild's save clears them)."""
    found = sorted(path.parent.glob(f".{path.name}.*"))
    current = (VectorIndex.read_header(path) or {}).get("data")
    if current:
        found += [p for p in data_files(path) if p.name != current]
    return found


def _data_intact(path: Path, header: dict) -> bool:
    data = path.with_name(header["data"])
    try:
        return data.name == header["data"] and data.stat().st_size == header.get("size")
    except OSError:
        return False


def _read_header(f) -> dict | None:
    magic = f.read(len(MAGIC))
    if magic not in (MAGIC, LEGACY_MAGIC):
        return None
    (hlen,) = struct.unpack("<Q", f.read(8))
    if hlen >= 1 << 16:
        return None
    header = json.loads(f.read(hlen))
    if not isinstance(header, dict) or (magic == MAGIC) != ("data" in header):
        return None
    return header
