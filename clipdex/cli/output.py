"""How commands print hits: the one place for `--json`, `--paths`, `-0` and the table.

`search`, `similar` and `duplicates` all print through here, so a name that is not UTF-8 reads
the same everywhere: raw bytes for `--paths`/`-0` (what `xargs -0` needs), ``path`` with U+FFFD
plus ``path_b64`` in JSON, U+FFFD in the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from clipdex.cli.common import emit_json
from clipdex.results import clock


def hit_output_options(f: Callable) -> Callable:
    """``--json``, ``--paths`` and ``-0`` (the command receives ``as_json``, ``paths``, ``null``)."""
    f = click.option("-0", "null", is_flag=True, help="Like --paths, separated by NUL.")(f)
    f = click.option("--paths", is_flag=True, help="Print bare absolute image paths, one per line.")(f)
    return click.option("--json", "as_json", is_flag=True, help="JSON Lines, one result per line.")(f)


def check_output_mode(as_json: bool, paths: bool, null: bool) -> None:
    """Usage error (exit 2) for more than one of the exclusive output modes."""
    if sum([as_json, paths, null]) > 1:
        raise click.UsageError("--json, --paths and -0 are exclusive")


def print_hits(
    results: Sequence[Any], as_json: bool = False, paths: bool = False, null: bool = False
) -> None:
    """Print `SearchResult`s in the chosen mode (the table when none is chosen)."""
    if as_json:
        for r in results:
            emit_json(r.to_dict())
    elif paths or null:  # the exact bytes of each name
        end = b"\0" if null else b"\n"
        click.echo(b"".join(r.path_bytes + end for r in results if r.path_bytes is not None), nl=False)
    else:
        for r in results:
            path = r.shown_path
            if r.modality == "video":
                shown = f"{path} @ {clock(r.t or 0)}"
            else:
                shown = path if r.modality == "image" else f"{r.text!r}" + (f"  [{path}]" if path else "")
            click.echo(f"{r.rank:>3}  {r.score:7.4f}  {shown}")


def print_groups(groups: Sequence[Sequence[Any]], as_json: bool = False) -> None:
    """Print duplicate groups (`DuplicateItem` lists): one JSON line a group, or a table."""
    for n, group in enumerate(groups, start=1):
        if as_json:
            emit_json({"items": [item.to_dict() for item in group]})
            continue
        if n > 1:
            click.echo()
        click.echo(f"group {n} ({len(group)} images)")
        for item in group:
            dims = f"{item.width}x{item.height}" if item.width and item.height else "?x?"
            at = f" @ {clock(item.t)}" if item.t is not None else ""
            click.echo(f"  {item.score:.4f}  {dims:>11}  {human_size(item.size):>9}  {item.shown_path}{at}")


def human_size(n: int | None) -> str:
    """Bytes for people: ``512 B``, ``1.5 MB``; ``?`` when unknown."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)
