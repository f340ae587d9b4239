"""Large-library mode's index ("ivf-pq-ondisk"): IVF-PQ whose inverted lists are mapped from disk.

Built from the store with bounded memory (FAISS's `merge_ondisk` recipe): train IVF-PQ on a sample,
fill one block index per chunk of stored vectors (a chunk at a time in float32), merge the blocks'
inverted lists into one immutable ``<kind>s.<uid>.ivfdata`` file (OnDiskInvertedLists), memory-
mapped read-only at search. Candidates are re-ranked exactly from the stored (float16) vectors.

After the build, added vectors go to an in-memory IVF-PQ with the same trained quantizer and
codebooks (``delta``); removals of built-in ids are tombstones. Both are saved in the small
``<kind>s.faiss`` file next to the names of the big files. When they grow past a quarter of the
build (`stale`), the writer rebuilds into a new ``.ivfdata`` (a new uid), switches the small file
atomically and deletes the old one (`remove_unused`): a file once written is never changed.

This module is the index and its files; the build is `clipdex.index.faiss.ondisk_build`.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipdex.index.faiss.ann import AnnIndex, list_ids
from clipdex.index.faiss.policy import MIN_TRAIN, ONDISK, choose_kind
from clipdex.index.faiss.runtime import faiss_module, single_thread

CHURN = 0.25  # rebuild once adds + removals since the build exceed this share of it


@dataclass
class OnDiskAnn(AnnIndex):
    """An AnnIndex whose ``index`` is the mapped base; ``delta`` and ``base_removed`` follow it."""

    delta: Any = None  # in-memory IVF-PQ sharing the base's quantizer and codebooks
    base_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted, mapped
    base_removed: set[int] = field(default_factory=set)  # tombstones of built-in ids
    _dead: np.ndarray | None = field(default=None, repr=False, compare=False)  # base_removed's array

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.base_removed) + int(self.delta.ntotal)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids):
            self.delta.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids)
            self.info["ntotal"] = self.ntotal

    def remove(self, ids: np.ndarray) -> None:
        ids = np.unique(np.asarray(ids, np.int64))
        if not len(ids):
            return
        if self.delta.ntotal:
            self.delta.remove_ids(ids)
        pos = np.minimum(np.searchsorted(self.base_ids, ids), max(len(self.base_ids) - 1, 0))
        in_base = ids[self.base_ids[pos] == ids] if len(self.base_ids) else ids[:0]
        self.base_removed.update(in_base.tolist())
        self._dead = None
        self.info["ntotal"] = self.ntotal

    def ids(self) -> np.ndarray:
        """Every live id (base minus tombstones, plus the delta's), unsorted."""
        base = np.asarray(self.base_ids)
        if self.base_removed:
            base = base[~np.isin(base, np.fromiter(self.base_removed, np.int64))]
        return np.concatenate([base, list_ids(self.delta.invlists)]).astype(np.int64)

    def stale(self) -> bool:
        churn = int(self.delta.ntotal) + len(self.base_removed)
        if churn > CHURN * max(self.info["built_on"], MIN_TRAIN):
            return True
        auto = choose_kind(self.ntotal, self.info["dim"], self.info["memory_budget"])
        return self.info["requested"] == "auto" and auto != ONDISK

    def set_params(self, **params: int) -> None:
        self.info["params"].update(params)
        if "nprobe" in params:
            self.index.nprobe = self.delta.nprobe = params["nprobe"]

    def _candidates(self, q: np.ndarray, fetch: int, selector: Any = None) -> tuple[np.ndarray, np.ndarray]:
        params = selector.params() if selector is not None else None
        # At least the pool the tuning measured (k = 10): a PQ ranking is too coarse to trust its
        # first k * rerank for a small k (the exact re-rank then sorts whatever comes back).
        fetch = max(fetch, 10 * self.info["params"].get("rerank", 1) + 10)
        if self._dead is None:  # once per change, not per query: up to a quarter of the build
            self._dead = np.fromiter(self.base_removed, np.int64, len(self.base_removed))
        dead, n = self._dead, fetch
        with single_thread(len(q) < 8):
            while True:  # deeper while tombstones leave fewer than `fetch` of a full list
                scores, ids = self.index.search(q, n, params=params)
                full = ids[:, -1] >= 0
                if len(dead):
                    drop = np.isin(ids, dead)
                    ids[drop], scores[drop] = -1, -np.inf
                if n >= self.index.ntotal or not (full & ((ids >= 0).sum(axis=1) < fetch)).any():
                    break
                n *= 2
            if self.delta.ntotal:
                d_scores, d_ids = self.delta.search(q, fetch, params=params)
                scores, ids = np.hstack([scores, d_scores]), np.hstack([ids, d_ids])
        scores = np.where(ids >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :fetch]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def write_data(ann: OnDiskAnn, path: Path) -> None:
    """The data file of an on-disk index (its head, tombstones included, goes to the index file):
    the base index (quantizer, codebooks, list offsets; its lists stay in the .ivfdata) and the
    delta, fsynced."""
    faiss = faiss_module()
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(ann.index).invlists)
    ann.info["files"]["written_as"] = lists.filename  # the name serialised with the base
    base = faiss.serialize_index(ann.index).tobytes()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(base)) + base)
        writer = faiss.PyCallbackIOWriter(f.write)
        faiss.write_index(ann.delta, writer)
        del writer  # flushes its buffer
        f.flush()
        os.fsync(f.fileno())


def read_data(head: dict, path: Path) -> OnDiskAnn:
    """What `write_data` wrote, with its head; the big files are found next to it. ValueError when
    one is missing or not the size it was written with."""
    faiss = faiss_module()
    folder = path.parent
    info = head["info"]
    files = info["files"]
    ivfdata = folder / files["ivfdata"]
    try:
        size = ivfdata.stat().st_size
    except OSError as e:
        raise ValueError(f"{ivfdata.name}: {e.strerror}") from None
    if size != files["ivfdata_bytes"]:  # a shorter mapped file would crash the search (SIGBUS)
        raise ValueError(f"{ivfdata.name} has {size} bytes, expected {files['ivfdata_bytes']}")
    base_ids = np.load(folder / files["ids"], mmap_mode="r", allow_pickle=False)
    if base_ids.shape != (files["base_count"],):
        raise ValueError(f"{files['ids']} holds {base_ids.shape}, expected ({files['base_count']},)")
    try:
        with open(path, "rb") as f:
            (blen,) = struct.unpack("<Q", f.read(8))
            if blen > os.fstat(f.fileno()).st_size:  # a damaged length must not become a huge read
                raise ValueError(f"not an on-disk index: {path}: a {blen}-byte part in a smaller file")
            blob = f.read(blen)
            # The lists' file name is serialised as it was when saved: point it here.
            old, new = files["written_as"].encode(), os.fsencode(ivfdata)
            blob = blob.replace(struct.pack("<Q", len(old)) + old, struct.pack("<Q", len(new)) + new, 1)
            base = faiss.read_index(faiss.PyCallbackIOReader(io.BytesIO(blob).read), faiss.IO_FLAG_READ_ONLY)
            delta = faiss.read_index(faiss.PyCallbackIOReader(f.read))
    except (RuntimeError, struct.error) as e:
        raise ValueError(f"not an on-disk index: {path}: {e}") from e
    ann = OnDiskAnn(ONDISK, base, info, delta=delta, base_ids=base_ids, base_removed=set(head["removed"]))
    ann.set_params(**{p: v for p, v in info["params"].items() if p == "nprobe"})
    return ann


def stray_builds(folder: Path, kind: str) -> list[Path]:
    """Work folders of on-disk builds that were killed (``.images.build-*``: their block indexes)."""
    return sorted(folder.glob(f".{kind}s.build-*"))


def remove_unused(folder: Path, kind: str, ann: AnnIndex) -> None:
    """Delete ``kind``'s big files that the saved index (its ``ann``) no longer names (an older
    build's). A reader still searching an old one keeps its mapping: Linux frees the file when it
    unmaps."""
    files = ann.info.get("files", {}) if isinstance(ann, OnDiskAnn) else {}
    keep = {files.get("ivfdata"), files.get("ids")}
    for pattern in (f"{kind}s.*.ivfdata", f"{kind}s.*.ids.npy"):
        for p in folder.glob(pattern):
            if p.name not in keep:
                p.unlink(missing_ok=True)
