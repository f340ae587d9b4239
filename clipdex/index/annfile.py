"""Persistence of an AnnIndex: a small .npz head (info, tombstones, ITQ codec) followed by the
FAISS index, streamed to and from an open file."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from typing import BinaryIO

import numpy as np

from clipdex.index.ann import AnnIndex, _faiss
from clipdex.index.codes import ItqCodec
from clipdex.index.gpu import on_gpu


def write(ann: AnnIndex, f: BinaryIO) -> None:
    """Write to an open file: a small .npz head (info, tombstones, codec), then the FAISS index
    streamed straight into ``f`` (no in-memory copies of a multi-GB index)."""
    faiss = _faiss()
    info = dict(ann.info, device="cpu")
    arrays = {
        "info": np.frombuffer(json.dumps({"kind": ann.kind, "info": info}).encode(), np.uint8),
        "removed": np.array(sorted(ann.removed), np.int64),
        **(ann.codec.to_arrays() if ann.codec is not None else {}),
    }
    head = io.BytesIO()
    np.savez(head, **arrays)
    f.write(struct.pack("<Q", head.tell()) + head.getvalue())
    writer = faiss.PyCallbackIOWriter(f.write)
    if ann.codec is not None:
        faiss.write_index_binary(ann.index, writer)
    else:
        faiss.write_index(faiss.index_gpu_to_cpu(ann.index) if on_gpu(ann) else ann.index, writer)
    del writer  # flushes its buffer


def read(f: BinaryIO) -> AnnIndex:
    """Read what `write` wrote; ValueError when it is truncated or damaged."""
    faiss = _faiss()
    try:
        (hlen,) = struct.unpack("<Q", f.read(8))
        with np.load(io.BytesIO(f.read(hlen)), allow_pickle=False) as z:
            head = json.loads(z["info"].tobytes())
            codec = ItqCodec.from_arrays(z) if "itq_mean" in z.files else None
            removed = set(z["removed"].tolist())
        if head["kind"] == "ivf-pq-ondisk":  # its lists live in files of their own
            from clipdex.index.ondisk import read_body

            return read_body(f, head, removed)
        reader = faiss.PyCallbackIOReader(f.read)
        index = faiss.read_index_binary(reader) if codec else faiss.read_index(reader)
    except (zipfile.BadZipFile, KeyError, EOFError, RuntimeError, struct.error, OSError) as e:
        raise ValueError(f"not a clipdex ANN index: {e}") from e
    ann = AnnIndex(head["kind"], index, head["info"], codec, removed)
    ann.set_params(**{p: v for p, v in ann.info["params"].items() if p in ("nprobe", "efSearch")})
    return ann


def to_bytes(ann: AnnIndex) -> bytes:
    buf = io.BytesIO()
    write(ann, buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> AnnIndex:
    """Raises ValueError when `data` is not what to_bytes wrote (truncated, damaged)."""
    return read(io.BytesIO(data))
