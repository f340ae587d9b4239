"""The shard folder of `clipdex embed`, in clip-retrieval's layout, and reading it back.

::

    DIR/img_emb/img_emb_00000.npy          (n, D) float16, one row per embedded picture or video span
    DIR/metadata/metadata_00000.parquet    path, size, mtime, width, height, caption, t, t_end (n rows)
    DIR/failed/failed_00000.parquet        path, error: files that could not be embedded
    DIR/manifest.json                      model, dim, shard size, per-shard digests and counts

A video gives one row per span of alike frames (``t``/``t_end``: its seconds; null for pictures),
all with the video's path, in time order. Each file is written to a temporary name and renamed
into place, metadata last: a shard whose three files exist is finished, and rewriting one (a
retried task, a resumed job) replaces it whole with identical content. clip-retrieval's own
output folders (``image_path`` column, maybe ``text_emb/``) are read by ``iter_shards`` too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.index.durable import write_atomically

MANIFEST = "manifest.json"
FORMAT = "clipdex-embed/1"
META_COLUMNS = ("path", "size", "mtime", "width", "height", "caption", "t", "t_end")


def shard_name(index: int) -> str:
    return f"{index:05d}"


def digest(keys: list[str]) -> str:
    """Identity of a shard's input listing: a resumed job redoes a shard whose inputs changed."""
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:16]


class ShardDir:
    """Paths and atomic writes of one output folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().absolute()

    def vectors(self, index: int) -> Path:
        return self.root / "img_emb" / f"img_emb_{shard_name(index)}.npy"

    def metadata(self, index: int) -> Path:
        return self.root / "metadata" / f"metadata_{shard_name(index)}.parquet"

    def failed(self, index: int) -> Path:
        return self.root / "failed" / f"failed_{shard_name(index)}.parquet"

    def files(self, index: int) -> tuple[Path, Path, Path]:
        return self.vectors(index), self.failed(index), self.metadata(index)  # metadata last

    def is_done(self, index: int) -> bool:
        return all(p.is_file() for p in self.files(index))

    # ---- manifest -------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ClipdexError(f"{path}: unreadable manifest ({e})") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ClipdexError(f"{path} is not a clipdex embed manifest")
        return data

    def write_manifest(self, data: dict) -> None:
        write_atomically(self.root / MANIFEST, lambda f: f.write(json.dumps(data, indent=1).encode() + b"\n"))

    # ---- shards ---------------------------------------------------------------------------
    def write_shard(self, index: int, vectors: np.ndarray, meta: dict[str, list], failed: list) -> None:
        """Write shard ``index``: float32 ``vectors`` (cast to float16 here), their metadata
        columns (``META_COLUMNS``, one row per vector) and the ``(path, error)`` failures."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = len(meta["path"])
        if vectors.shape[0] != n:
            raise ValueError(f"shard {index}: {vectors.shape[0]} vectors but {n} metadata rows")
        table = pa.table({
            "path": pa.array(meta["path"], pa.string()),
            "size": pa.array(meta["size"], pa.int64()),
            "mtime": pa.array(meta["mtime"], pa.float64()),
            "width": pa.array(meta["width"], pa.int32()),
            "height": pa.array(meta["height"], pa.int32()),
            "caption": pa.array(meta["caption"], pa.string()),
            "t": pa.array(meta["t"], pa.float64()),
            "t_end": pa.array(meta["t_end"], pa.float64()),
        })  # fmt: skip
        bad = pa.table({
            "path": pa.array([p for p, _ in failed], pa.string()),
            "error": pa.array([e for _, e in failed], pa.string()),
        })  # fmt: skip
        half = np.ascontiguousarray(vectors, dtype=np.float16)
        vec_path, failed_path, meta_path = self.files(index)
        write_atomically(vec_path, lambda f: np.save(f, half, allow_pickle=False))
        write_atomically(failed_path, lambda f: pq.write_table(bad, f))
        write_atomically(meta_path, lambda f: pq.write_table(table, f))

    def remove_shard(self, index: int) -> None:
        for p in self.files(index):
            p.unlink(missing_ok=True)

    def remove_temporaries(self) -> None:
        for sub in ("img_emb", "metadata", "failed"):
            for p in (self.root / sub).glob(".*.tmp"):
                p.unlink(missing_ok=True)

    def shard_indexes(self) -> list[int]:
        """Indexes of every shard file present (any of the three)."""
        found = set()
        for sub, prefix, ext in (("img_emb", "img_emb_", ".npy"), ("metadata", "metadata_", ".parquet"),
                                 ("failed", "failed_", ".parquet")):  # fmt: skip
            for p in (self.root / sub).glob(f"{prefix}*{ext}"):
                tail = p.name[len(prefix) : -len(ext)]
                if tail.isdigit():
                    found.add(int(tail))
        return sorted(found)


# ---- reading shard folders (ours and clip-retrieval's) -----------------------------------------
@dataclass(frozen=True)
class ShardFiles:
    """One shard of a SHARD_DIR: image vectors, their metadata, text vectors if any."""

    name: str
    image_vectors: Path
    metadata: Path
    text_vectors: Path | None


def is_shard_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "img_emb").is_dir() and (p / "metadata").is_dir()


def iter_shards(root: str | os.PathLike) -> list[ShardFiles]:
    """Shards of a SHARD_DIR in order: ``img_emb/img_emb_X.npy`` with ``metadata/metadata_X.parquet``
    (and ``text_emb/text_emb_X.npy`` when present); refuses a vector file without its metadata."""
    root = Path(root)
    if not is_shard_dir(root):
        raise ClipdexError(f"{root} is not a shard folder (no img_emb/ and metadata/ in it)")
    shards = []
    for vec in (root / "img_emb").glob("img_emb_*.npy"):
        tail = vec.name[len("img_emb_") : -len(".npy")]
        meta = root / "metadata" / f"metadata_{tail}.parquet"
        if not meta.is_file():
            raise ClipdexError(f"{vec} has no metadata file ({meta.name} is missing)")
        text = root / "text_emb" / f"text_emb_{tail}.npy"
        shards.append(ShardFiles(tail, vec, meta, text if text.is_file() else None))
    shards.sort(key=lambda s: _natural(s.name))
    if not shards:
        raise ClipdexError(f"{root}: no img_emb/img_emb_*.npy shards in it")
    return shards


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def iter_shard_pairs(root: str | os.PathLike) -> Iterator[tuple[Path, Path, str]]:
    """``(vectors.npy, metadata.parquet, modality)`` for every array of a SHARD_DIR, shard by shard."""
    for shard in iter_shards(root):
        yield shard.image_vectors, shard.metadata, "image"
        if shard.text_vectors is not None:
            yield shard.text_vectors, shard.metadata, "text"


def manifest_model(root: str | os.PathLike) -> tuple[str, str | None] | None:
    """(model, pretrained) recorded by `clipdex embed` in a SHARD_DIR, or None (e.g. clip-retrieval's)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    manifest = ShardDir(root).read_manifest()
    model = manifest.get("model") if manifest else None
    return (model["name"], model.get("pretrained")) if isinstance(model, dict) and model.get("name") else None
