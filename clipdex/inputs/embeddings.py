"""Reading embeddings computed elsewhere, for `import-embeddings`: a .npy array plus metadata.

``VECTORS.npy`` is an (N, D) float array (float16/float32; float64 is accepted too), read through a
memory map in chunks so memory stays bounded. ``METADATA`` is a .csv, .jsonl or .parquet file with
N rows and a ``path`` (alias ``image_path``) column for images or a ``text`` (alias ``caption``)
column for texts; image rows may carry a video frame's ``t`` and ``t_end`` (see
`clipdex.inputs.spans`). Rows count from 0, as in the array. Everything is validated before the caller
writes anything. Pure numpy / csv / json / pyarrow: no models here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.inputs.spans import SPAN_COLUMNS, check_spans, parse_arrow, parse_values
from clipdex.inputs.tables import JSONL_SUFFIXES, pick_column, read_csv, read_records, require_file
from clipdex.kinds import IMAGE, TEXT

COLUMNS = {IMAGE: ("path", "image_path"), TEXT: ("text", "caption")}
CHUNK = 100_000


@dataclass
class Embeddings:
    """A validated import: the vectors (memory-mapped) with their row norms, and one value per row."""

    vectors: np.ndarray  # (N, D), float16/32/64, usually a read-only memmap
    norms: np.ndarray  # (N,) float32, finite and > 0
    modality: str  # "image" | "text"
    values: list[str]  # absolute image paths (str) or texts, one per row
    # Video frame rows (images only): each row's span in seconds, NaN for a picture row; None
    # when no row is a frame (t_end is filled: a frame without one stands for its t alone).
    t: np.ndarray | None = None
    t_end: np.ndarray | None = None

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def chunks(
        self, size: int | None = None, out: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 L2-normalised rows) in chunks of ``size`` (default ``CHUNK``) rows.

        With ``out`` ((N, D) float32) the rows are written there and views of it are yielded;
        without, one buffer is reused (a yielded chunk is valid until the next one is asked for).
        """
        size = size or CHUNK
        buf = np.empty((min(size, self.count), self.dim), np.float32) if out is None else None
        for start in range(0, self.count, size):
            stop = min(start + size, self.count)
            block = out[start:stop] if out is not None else buf[: stop - start]
            _to_float32(self.vectors[start:stop], block)
            np.divide(block, self.norms[start:stop, None], out=block)
            yield start, block

    def frame_rows(self) -> np.ndarray:
        """The rows that are video frames (have a t), ascending."""
        return np.empty(0, np.int64) if self.t is None else np.flatnonzero(~np.isnan(self.t))

    def picture_rows(self, start: int, stop: int) -> np.ndarray | None:
        """Rows ``start``..``stop`` that are not video frames, relative to ``start``; None: all."""
        if self.t is None:
            return None
        return np.flatnonzero(np.isnan(self.t[start:stop]))

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """float32 L2-normalised vectors of ``rows`` (the same values `chunks` gives them)."""
        out = np.empty((len(rows), self.dim), np.float32)
        _to_float32(self.vectors[rows], out)
        np.divide(out, self.norms[rows, None], out=out)
        return out

    def missing_files(self) -> int:
        """How many image paths do not exist on this machine (0 for texts): each picture row, and
        each video once (not once per frame)."""
        if self.modality != IMAGE:
            return 0
        if self.t is None:
            return sum(not os.path.exists(v) for v in self.values)
        frame = ~np.isnan(self.t)
        pictures = sum(not os.path.exists(v) for v, f in zip(self.values, frame.tolist()) if not f)
        videos = {self.values[r] for r in np.flatnonzero(frame).tolist()}
        return pictures + sum(not os.path.exists(v) for v in videos)

    def paths(self, start: int, stop: int) -> list[bytes]:
        """Rows' image paths as stored: absolute, ``os.fsencode`` bytes."""
        return [os.fsencode(v) for v in self.values[start:stop]]


def read_embeddings(
    vectors_path: str | os.PathLike, metadata_path: str | os.PathLike, modality: str | None = None
) -> Embeddings:
    """Open, check and pair up ``vectors_path`` and ``metadata_path`` (raises ClipdexError)."""
    if modality not in (None, IMAGE, TEXT):
        raise ValueError(f"modality must be 'image' or 'text', not {modality!r}")
    vectors = open_vectors(vectors_path)
    modality, values, spans = read_metadata(metadata_path, modality)
    name = Path(metadata_path).name
    if len(values) != vectors.shape[0]:
        raise ClipdexError(
            f"{Path(vectors_path).name} has {vectors.shape[0]} rows but {name} has {len(values)}; "
            "they must match row for row"
        )
    what = COLUMNS[modality][0]
    for row, value in enumerate(values):
        if not isinstance(value, str):
            got = "no" if value is None else f"a non-text ({type(value).__name__})"
            raise ClipdexError(f"{name}: row {row} has {got} {what} (rows count from 0)")
        if not value.strip():
            raise ClipdexError(f"{name}: row {row} has an empty {what} (rows count from 0)")
    if modality == IMAGE:  # relative to the metadata file's folder, like fine-tuning pairs
        base = os.path.dirname(os.path.abspath(metadata_path))
        values = [os.path.normpath(os.path.join(base, os.path.expanduser(v))) for v in values]
        t, t_end = check_spans(*spans, name)
        if t is not None:
            _check_frame_paths(values, t, name)
    else:
        values = [v.strip() for v in values]
        t = t_end = None  # spans are a picture's business: texts ignore them
    norms = row_norms(vectors, Path(vectors_path).name)
    return Embeddings(vectors, norms, modality, values, t, t_end)


def _check_frame_paths(values: list[str], t: np.ndarray, name: str) -> None:
    """A path is a video (rows with a t) or a picture (rows without), never both."""
    frame = (~np.isnan(t)).tolist()
    videos = {v for v, f in zip(values, frame) if f}
    for row, (v, f) in enumerate(zip(values, frame)):
        if not f and v in videos:
            raise ClipdexError(
                f"{name}: row {row} has no t but other rows give {v} a t (a video's frames);"
                " a path is a picture or a video, not both (rows count from 0)"
            )


def open_vectors(path: str | os.PathLike) -> np.ndarray:
    """The (N, D) float array in ``path``, memory-mapped; refuses other shapes and dtypes."""
    name = Path(path).name
    require_file(path, "vectors file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as e:
        raise ClipdexError(f"no such file: {path}") from e
    except OSError as e:
        raise ClipdexError(f"cannot read {path}: {e.strerror or e}") from e
    except ValueError as e:  # object arrays (pickles), a non-.npy file
        raise ClipdexError(f"{name} is not a numeric .npy array ({e})") from e
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise ClipdexError(f"{name} is not a .npy array (an .npz archive? save one array with np.save)")
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4, 8):
        raise ClipdexError(f"{name} has dtype {arr.dtype}; expected float16 or float32")
    if arr.ndim != 2:
        raise ClipdexError(f"{name} has shape {arr.shape}; expected a 2-D (N, D) array")
    if arr.shape[1] == 0:
        raise ClipdexError(f"{name} has shape {arr.shape}: vectors of dimension 0")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def row_norms(vectors: np.ndarray, name: str = "vectors", size: int = 16384) -> np.ndarray:
    """L2 norm of every row, in chunks; refuses a row with NaN/inf values or a zero vector."""
    norms = np.empty(vectors.shape[0], np.float32)
    buf = np.empty((min(size, vectors.shape[0]), vectors.shape[1]), np.float32)
    for start in range(0, vectors.shape[0], size):
        block = buf[: min(size, vectors.shape[0] - start)]
        _to_float32(vectors[start : start + size], block)
        with np.errstate(over="ignore", invalid="ignore"):
            n = np.sqrt(np.einsum("ij,ij->i", block, block))
        bad = np.flatnonzero(~np.isfinite(n) | (n == 0))
        for i in bad:  # finite but huge values overflow float32 squares: recheck in float64
            row = np.asarray(vectors[start + i], np.float64)
            where = f"{name}: row {start + i}"
            if not np.isfinite(row).all():
                raise ClipdexError(f"{where} contains NaN or infinite values (rows count from 0)")
            norm = float(np.linalg.norm(row))
            if norm == 0:
                raise ClipdexError(f"{where} is a zero vector (rows count from 0)")
            if norm > np.finfo(np.float32).max:
                raise ClipdexError(f"{where} has values too large for float32 (rows count from 0)")
            n[i] = norm
        norms[start : start + len(block)] = n
    return norms


def _to_float32(src: np.ndarray, dst: np.ndarray) -> None:
    """Convert rows into a preallocated float32 buffer (reused: no fresh pages for every chunk)."""
    with np.errstate(over="ignore"):  # float64 beyond float32's range -> inf, refused by row_norms
        np.copyto(dst, src, casting="unsafe")


# ---- metadata -------------------------------------------------------------------------------
Spans = tuple[np.ndarray | None, np.ndarray | None]  # raw t and t_end (NaN: none), unchecked


def read_metadata(path: str | os.PathLike, modality: str | None = None) -> tuple[str, list, Spans]:
    """(modality, one value per row, the rows' raw t and t_end) from a .csv, .jsonl or .parquet
    file. The modality defaults to image when a path column exists, else text; spans are read for
    images only (None where the file has no such column; `check_spans` checks them).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".csv": _table, ".tsv": _table, ".jsonl": _table, ".ndjson": _table, ".parquet": _parquet}
    if suffix not in readers:
        raise ClipdexError(f"{path.name}: metadata must be a .csv, .jsonl or .parquet file")
    require_file(path, "metadata file")
    return readers[suffix](path, modality)


def _pick(path: Path, fields: list[str], modality: str | None) -> tuple[str, str]:
    """(modality, column name) to read, or a message naming the columns that were found."""
    wanted = [modality] if modality else [IMAGE, TEXT]
    column = pick_column(path, fields, [c for m in wanted for c in COLUMNS[m]])
    return next(m for m in wanted if column in COLUMNS[m]), column


def _span_columns(fields: list[str], modality: str) -> list[str]:
    return [c for c in SPAN_COLUMNS if c in fields] if modality == IMAGE else []


def _table(path: Path, modality: str | None) -> tuple[str, list, Spans]:
    spans: dict[str, np.ndarray] = {}
    if path.suffix.lower() in JSONL_SUFFIXES:
        fields, records = read_records(path)
        modality, column = _pick(path, fields, modality)
        for c in _span_columns(fields, modality):
            spans[c] = parse_values([r.get(c) for r in records], path.name, c)
        return modality, [r.get(column) for r in records], (spans.get("t"), spans.get("t_end"))
    header, rows = read_csv(path)  # plain rows: a million dicts would cost time for one column
    modality, column = _pick(path, header, modality)
    for c in _span_columns(header, modality):
        j = header.index(c)
        spans[c] = parse_values([row[j] if len(row) > j else None for row in rows], path.name, c)
    i = header.index(column)
    return modality, [row[i] if len(row) > i else None for row in rows], (spans.get("t"), spans.get("t_end"))


def _parquet(path: Path, modality: str | None) -> tuple[str, list, Spans]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ClipdexError(
            "reading .parquet needs pyarrow: pip install 'clipdex[parquet]' (or use .csv / .jsonl)"
        ) from e
    try:
        fields = list(pq.read_schema(path).names)
        modality, column = _pick(path, fields, modality)
        table = pq.read_table(path, columns=[column, *_span_columns(fields, modality)])
    except ClipdexError:
        raise
    except Exception as e:  # pyarrow's ArrowInvalid / OSError for a broken file
        raise ClipdexError(f"{path.name}: cannot read parquet ({e})") from e
    col = table.column(column)
    values = col.to_pylist()
    if values and not isinstance(next((v for v in values if v is not None), ""), str):
        raise ClipdexError(f"{path.name}: column '{column}' holds {col.type} values, not strings")
    spans = {c: parse_arrow(table.column(c), path.name, c) for c in table.column_names if c in SPAN_COLUMNS}
    return modality, values, (spans.get("t"), spans.get("t_end"))
