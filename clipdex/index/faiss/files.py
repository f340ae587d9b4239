"""Persistence of an AnnIndex: a small .npz head (info, tombstones, ITQ codec) and the FAISS index.

Two layouts: one stream (head, then the index: `write`/`read`, `to_bytes`), and the library's
files (`write_head` into a small file, `write_index_file` into a FAISS file of its own, which
`read_index_file` can memory-map; see clipdex.index.faiss.vector_index)."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from clipdex.index.durable import fsync_file
from clipdex.index.faiss.ann import AnnIndex
from clipdex.index.faiss.codes import ItqCodec
from clipdex.index.faiss.ondisk import read_data, write_data
from clipdex.index.faiss.policy import ONDISK
from clipdex.index.faiss.runtime import faiss_module


def write(ann: AnnIndex, f: BinaryIO) -> None:
    """Write to an open file: the head, then the FAISS index streamed straight into ``f`` (no
    in-memory copies of a multi-GB index)."""
    write_head(ann, f)
    writer = faiss_module().PyCallbackIOWriter(f.write)
    _write_index(ann, writer)
    del writer  # flushes its buffer


def read(f: BinaryIO) -> AnnIndex:
    """Read what `write` wrote; ValueError when it is truncated or damaged."""
    head = read_head(f)
    faiss = faiss_module()
    reader = faiss.PyCallbackIOReader(f.read)
    try:
        index = faiss.read_index_binary(reader) if head["codec"] else faiss.read_index(reader)
    except RuntimeError as e:
        raise ValueError(f"not a clipdex ANN index: {e}") from e
    return _assemble(head, index)


def write_head(ann: AnnIndex, f: BinaryIO) -> None:
    """The small part: a length-prefixed .npz of info, tombstones and the codec."""
    info = dict(ann.info, device="cpu")
    arrays = {
        "info": np.frombuffer(json.dumps({"kind": ann.kind, "info": info}).encode(), np.uint8),
        # An on-disk index keeps its tombstones apart (clipdex.index.faiss.ondisk): those are saved.
        "removed": np.array(sorted(getattr(ann, "base_removed", ann.removed)), np.int64),
        **(ann.codec.to_arrays() if ann.codec is not None else {}),
    }
    head = io.BytesIO()
    np.savez(head, **arrays)
    f.write(struct.pack("<Q", head.tell()) + head.getvalue())


def read_head(f: BinaryIO) -> dict:
    """What `write_head` wrote: {"kind", "info", "codec", "removed"}; ValueError when damaged."""
    try:
        (hlen,) = struct.unpack("<Q", f.read(8))
        left = _bytes_left(f)
        if left is not None and hlen > left:  # a damaged length must not become a huge read
            raise ValueError(f"head of {hlen} bytes, {left} left in the file")
        with np.load(io.BytesIO(f.read(hlen)), allow_pickle=False) as z:
            head = json.loads(z["info"].tobytes())
            head["codec"] = ItqCodec.from_arrays(z) if "itq_mean" in z.files else None
            head["removed"] = set(z["removed"].tolist())
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError, struct.error) as e:
        raise ValueError(f"not a clipdex ANN index: {e}") from e
    return head


def _bytes_left(f: BinaryIO) -> int | None:
    try:
        here = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(here)
    except (OSError, AttributeError, ValueError):
        return None  # not seekable: the read itself finds the end
    return end - here


def write_index_file(ann: AnnIndex, path: Path) -> None:
    """The FAISS index alone, in FAISS's own file format (so it can be memory-mapped), fsynced.
    An on-disk index (large-library mode) writes its own small data file (see clipdex.index.faiss.ondisk)."""
    if ann.kind == ONDISK:
        write_data(ann, path)  # type: ignore[arg-type]
    else:
        _write_index(ann, str(path))
    fsync_file(path)


def read_index_file(head: dict, path: Path, mmap: bool) -> AnnIndex:
    """The index `write_index_file` wrote, with its head. ``mmap``: FAISS maps the file's arrays
    (codes, inverted lists, links) instead of reading them: opening costs no I/O and pages come in
    as searches touch them. A mapped index is read-only (FAISS aborts on a write to it)."""
    if head["kind"] == ONDISK:  # its lists are mapped read-only from their own file anyway
        return read_data(head, path)
    faiss = faiss_module()
    flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
    try:
        if head["codec"]:
            index = faiss.read_index_binary(str(path), flags)
        else:
            index = faiss.read_index(str(path), flags)
    except RuntimeError as e:
        if not path.exists():
            raise FileNotFoundError(str(path)) from e
        raise ValueError(f"not a FAISS index: {path}: {e}") from e
    return _assemble(head, index)


def _write_index(ann: AnnIndex, dest) -> None:
    faiss = faiss_module()
    if ann.codec is not None:
        faiss.write_index_binary(ann.index, dest)
    else:
        faiss.write_index(faiss.index_gpu_to_cpu(ann.index) if ann.on_gpu else ann.index, dest)


def _assemble(head: dict, index) -> AnnIndex:
    ann = AnnIndex(head["kind"], index, head["info"], head["codec"], head["removed"])
    ann.set_params(**{p: v for p, v in ann.info["params"].items() if p in ("nprobe", "efSearch")})
    return ann


def to_bytes(ann: AnnIndex) -> bytes:
    """`write` into memory."""
    buf = io.BytesIO()
    write(ann, buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> AnnIndex:
    """Raises ValueError when `data` is not what to_bytes wrote (truncated, damaged)."""
    return read(io.BytesIO(data))
