"""`clipdex duplicates`: groups of near-identical images, best copy first."""

from __future__ import annotations

import click

from clipdex.cli.common import emit_json, info, json_option, pass_state


@click.command()
@click.option("--threshold", default=0.95, show_default=True, type=click.FloatRange(-1.0, 1.0),
              help="Cosine similarity at or above which two images count as duplicates.")  # fmt: skip
@click.option("--under", multiple=True, type=click.Path(path_type=bytes),
              help="Only images under this folder (repeatable).")  # fmt: skip
@json_option
@pass_state
def duplicates(state, threshold, under, as_json):
    """Find near-duplicate images (resized, re-encoded, slightly cropped copies).

    Each group lists the best copy first (most pixels, then largest file) with its path, size
    and dimensions; scores are cosine similarities to that first image. Only stored vectors are
    used: no model is loaded, no image decoded. --json prints one group a line:
    {"items": [{"id", "path", "score", "width", "height", "size"}, ...]}.

    \b
    Examples:
      clipdex duplicates
      clipdex duplicates --threshold 0.9 --under ~/Pictures/2024
      clipdex duplicates --json | jq -r '.items[1:][].path'     # every copy but the best
    """
    with state.open() as lib:
        groups = lib.duplicates(threshold=threshold, under=list(under))
    for n, group in enumerate(groups, start=1):
        if as_json:
            emit_json({"items": [item.to_dict() for item in group]})
            continue
        if n > 1:
            click.echo()
        click.echo(f"group {n} ({len(group)} images)")
        for item in group:
            dims = f"{item.width}x{item.height}" if item.width and item.height else "?x?"
            click.echo(f"  {item.score:.4f}  {dims:>11}  {_size(item.size):>9}  {item.path}")
    spare = sum(item.size or 0 for g in groups for item in g[1:])
    copies = sum(len(g) for g in groups)
    info(f"{len(groups)} groups, {copies} images; {_size(spare)} in copies other than the best", as_json)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


COMMANDS = [duplicates]
