"""Reading the user's input files, defined once: .txt lines, .csv/.tsv tables, .jsonl records.

Every reader splits lines only on "\\n" (a trailing "\\r" of "\\r\\n" is dropped): text may contain
U+2028, U+2029, \\x85 or \\x0c, which ``str.splitlines`` would split on. CSV/TSV go through the
csv module on the file object (``newline=""``), so quoted fields keep their line breaks. Files are
UTF-8 (a BOM is tolerated). Anything that is not a regular file (a FIFO, a device, a folder) is
refused before it is opened, so a read can never block.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from clipdex.errors import ClipdexError
from clipdex.inputs.paths import display_path

TABLE_SUFFIXES = (".csv", ".tsv")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def require_file(path: str | bytes | os.PathLike, what: str = "file") -> None:
    """Raise a one-line ClipdexError unless ``path`` is an existing regular file (checked by stat,
    before anything opens it: opening a FIFO would block)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise ClipdexError(f"{what} not found: {display_path(path)}") from e
    except OSError as e:
        raise ClipdexError(f"cannot read {what} {display_path(path)}: {e.strerror or e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise ClipdexError(f"{what} {display_path(path)} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ClipdexError(f"{what} {display_path(path)} is not a regular file (a pipe or device?)")


def _open(path: Path, newline: str) -> Iterator:
    require_file(path)
    try:
        return open(path, encoding="utf-8-sig", newline=newline)
    except OSError as e:
        raise ClipdexError(f"cannot read {path}: {e.strerror or e}") from e


def _decode_error(path: Path, e: UnicodeDecodeError) -> ClipdexError:
    return ClipdexError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")


def read_lines(path: str | Path) -> list[str]:
    """The lines of a text file, split on "\\n" only ("\\r\\n" endings dropped too)."""
    path = Path(path)
    try:
        with _open(path, newline="\n") as f:  # "\n": no other character ends a line
            return [_chomp(line) for line in f]
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from e


def _chomp(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-2] if line.endswith("\r\n") else line[:-1]
    return line


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per non-empty line; a bad line is a one-line error naming its number."""
    path = Path(path)
    rows = []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ClipdexError(f"{path}:{n}: invalid JSON ({e})") from e
        if not isinstance(row, dict):
            raise ClipdexError(f"{path}:{n}: each line must be a JSON object")
        rows.append(row)
    return rows


def read_csv(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a .csv (or, by suffix, tab-separated .tsv) file, via the csv module."""
    path = Path(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with _open(path, newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = [h.strip() for h in next(reader, [])]
            return header, list(reader)
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from e
    except csv.Error as e:
        raise ClipdexError(f"{path}: invalid CSV ({e})") from e


def read_records(path: str | Path) -> tuple[list[str], list[dict]]:
    """(field names, rows as dicts) of a .csv/.tsv (header row) or .jsonl file."""
    path = Path(path)
    if path.suffix.lower() in JSONL_SUFFIXES:
        rows = read_jsonl(path)
        return list(dict.fromkeys(k for r in rows for k in r)), rows
    header, raw = read_csv(path)
    return header, [dict(zip(header, r)) for r in raw]


def pick_column(path: str | Path, fields: Sequence[str], candidates: Sequence[str], hint: str = "") -> str:
    """The first of ``candidates`` among ``fields``, else an error naming the columns found."""
    for name in candidates:
        if name in fields:
            return name
    names = " or ".join(f"'{c}'" for c in candidates)
    found = ", ".join(fields) or "none"
    raise ClipdexError(f"{Path(path).name}: no {names} column (found: {found}){hint}")


def read_texts(path: str | Path, column: str | None = None) -> list[str]:
    """Non-empty, stripped texts from ``path``; ``column`` (default ``text``) for tabular files."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES + JSONL_SUFFIXES:
        fields, rows = read_records(path)
        if rows:
            name = pick_column(path, fields, [column or "text"], "; choose one with --column")
            values = [r.get(name) for r in rows]
        else:
            values = []
    elif column is not None:
        raise ClipdexError(f"--column only applies to .csv, .tsv and .jsonl files, not {path.name}")
    else:
        values = read_lines(path)
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]
