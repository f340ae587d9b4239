"""What `clipdex embed SOURCE...` embeds: folders, image and video files, lists of paths, fsspec URLs.

A SOURCE is a folder (scanned with `index`'s rules, videos included unless ``videos=False``), an
image or video file, a `.txt` (one path a line),
`.csv`/`.tsv` or `.parquet` list (a `path`, `image_path` or `url` column), or the same as an
`s3://`/`gs://`/… URL read through fsspec. Relative paths in a list are relative to the list's
folder. The listing is deduplicated and sorted, so a job's shards are the same on every run.
"""

from __future__ import annotations

import csv
import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipdex.errors import ClipdexError
from clipdex.index.scan import image_extensions, scan
from clipdex.inputs.paths import display_path
from clipdex.inputs.tables import pick_column
from clipdex.retrieval.video import is_video_name

LIST_SUFFIXES = (".txt", ".csv", ".tsv", ".parquet")
LIST_COLUMNS = ("path", "image_path", "url")


@dataclass(frozen=True, slots=True)
class Entry:
    """One input file: ``key`` is its absolute local path (``os.fsdecode``) or its URL."""

    key: str
    sidecar: str | None = None  # a known sidecar caption file (folder scans)
    probe: bool = False  # look for `stem.txt` beside it when loading (list sources)

    @property
    def video(self) -> bool:
        """Named like a video: decoded as one (its content is still probed, not trusted)."""
        return is_video_name(self.key)


def is_url(path: str) -> bool:
    return "://" in path and not os.path.exists(path)


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for ``url``; one clear line when fsspec is missing."""
    try:
        import fsspec
    except ImportError as e:
        raise ClipdexError(
            f"{url}: reading URLs needs fsspec (pip install fsspec, plus s3fs or gcsfs)"
        ) from e
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:  # e.g. s3:// without s3fs installed
        raise ClipdexError(f"{url}: {str(e).splitlines()[0]}") from e


def list_sources(
    sources: Sequence[str | bytes], exclude: Sequence[str | os.PathLike] = (), videos: bool = True
) -> list[Entry]:
    """Every input file of ``sources``, deduplicated, sorted by key (raises ClipdexError);
    ``videos=False`` leaves videos out (of folders and of lists)."""
    found: dict[str, Entry] = {}
    for source in sources:
        for entry in _entries(source, exclude, videos):
            if videos or not entry.video:
                found.setdefault(entry.key, entry)
    return [found[k] for k in sorted(found)]


def _entries(source: str | bytes, exclude: Sequence, videos: bool) -> Iterator[Entry]:
    text = os.fsdecode(source)
    if is_url(text):
        yield from _url_entries(text)
        return
    path = os.path.abspath(os.fsencode(source))
    if os.path.isdir(path):
        for s in scan([path], exclude=exclude, videos=videos):
            side = os.fsdecode(s.sidecar.path) if s.sidecar else None
            yield Entry(os.fsdecode(s.image.path), side)
    elif not os.path.exists(path):
        raise ClipdexError(f"source not found: {display_path(path)}")
    elif path.lower().endswith(tuple(s.encode() for s in LIST_SUFFIXES)):
        folder = os.path.dirname(os.fsdecode(path))
        for item in _read_list(os.fsdecode(path), open(path, "rb")):
            if is_url(item):
                yield Entry(item, probe=True)
            else:
                yield Entry(os.path.normpath(os.path.join(folder, os.path.expanduser(item))), probe=True)
    elif _is_image_name(os.fsdecode(path)) or is_video_name(path):
        yield Entry(os.fsdecode(path), probe=not is_video_name(path))
    else:
        raise ClipdexError(
            f"{display_path(path)}: not a folder, an image, a video or a .txt/.csv/.parquet list of paths"
        )


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in image_extensions()


def _url_entries(url: str) -> Iterator[Entry]:
    fs, root = filesystem(url)
    full = fs.unstrip_protocol
    if root.lower().endswith(LIST_SUFFIXES):
        base = url.rsplit("/", 1)[0]
        try:
            fh = fs.open(root, "rb")
        except FileNotFoundError as e:
            raise ClipdexError(f"source not found: {url}") from e
        for item in _read_list(url, fh):
            yield Entry(item if "://" in item else f"{base}/{item}", probe=True)
        return
    if _is_image_name(root) and fs.isfile(root):
        yield Entry(url, probe=True)
        return
    if not fs.isdir(root):
        raise ClipdexError(f"source not found: {url}")
    files = sorted(fs.find(root))
    texts = {p[:-4] for p in files if p.endswith(".txt")}
    for p in files:
        rel = posixpath.relpath(p, root.rstrip("/") or "/")
        if any(part.startswith(".") for part in rel.split("/")) or not _is_image_name(p):
            continue
        stem = os.path.splitext(p)[0]
        yield Entry(full(p), full(stem + ".txt") if stem in texts else None)


def _read_list(name: str, fh: Any) -> list[str]:
    """The paths in a .txt/.csv/.tsv/.parquet list (file object ``fh``, closed here)."""
    suffix = Path(name).suffix.lower()
    with fh:
        if suffix == ".parquet":
            return _parquet_list(name, fh)
        try:
            data = fh.read().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ClipdexError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if suffix == ".txt":
        return [line.strip() for line in data.splitlines() if line.strip()]
    rows = list(csv.reader(data.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
    header = rows[0] if rows else []
    i = header.index(pick_column(name, header, LIST_COLUMNS))
    return [row[i].strip() for row in rows[1:] if len(row) > i and row[i].strip()]


def _parquet_list(name: str, fh: Any) -> list[str]:
    from clipdex.scale import require_pyarrow

    require_pyarrow()
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(fh)
    except Exception as e:  # ArrowInvalid and friends for a broken file
        raise ClipdexError(f"{name}: cannot read parquet ({e})") from e
    column = pick_column(name, table.column_names, LIST_COLUMNS)
    return [v.strip() for v in table.column(column).to_pylist() if isinstance(v, str) and v.strip()]
