"""Reading texts for `add-texts`: .txt (one per line), .csv/.tsv (header) and .jsonl."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from clipdex.errors import ClipdexError


def read_texts(path: str | Path, column: str | None = None) -> list[str]:
    """Non-empty, stripped texts from ``path``; ``column`` (default ``text``) for tabular files."""
    path = Path(path)
    suffix = path.suffix.lower()
    raw = read_text(path)
    if suffix in (".csv", ".tsv"):
        rows = list(csv.DictReader(raw.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
        fields = list(rows[0].keys()) if rows else []
        values = _column(rows, fields, column, path)
    elif suffix in (".jsonl", ".ndjson"):
        rows = parse_jsonl(raw, path)
        fields = sorted({k for r in rows for k in r})
        values = _column(rows, fields, column, path)
    elif column is not None:
        raise ClipdexError(f"--column only applies to .csv, .tsv and .jsonl files, not {path.name}")
    else:
        values = raw.splitlines()
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON Lines file (UTF-8, BOM tolerated, blank lines skipped)."""
    return parse_jsonl(read_text(Path(path)), Path(path))


def read_text(path: Path) -> str:
    """A whole UTF-8 file (BOM tolerated); unreadable or undecodable -> one-line ClipdexError."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ClipdexError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ClipdexError(f"cannot read {path}: {e.strerror}") from e


def parse_jsonl(raw: str, path: Path) -> list[dict]:
    """One JSON object per non-empty line; a bad line is a one-line error naming its number."""
    rows = []
    for n, line in enumerate(raw.splitlines(), start=1):
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


def _column(rows: list[dict], fields: list[str], column: str | None, path: Path) -> list:
    name = column or "text"
    if rows and not any(name in r for r in rows):
        found = ", ".join(fields) or "none"
        raise ClipdexError(f"{path}: no column '{name}' (found: {found}); choose one with --column")
    return [r.get(name) for r in rows]
