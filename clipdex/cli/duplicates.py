"""`clipdex duplicates`: groups of near-identical images, best copy first."""

from __future__ import annotations

import click

from clipdex.cli.common import info, json_option, pass_state
from clipdex.cli.output import human_size, print_groups


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
    print_groups(groups, as_json)
    spare = sum(item.size or 0 for g in groups for item in g[1:])
    copies = sum(len(g) for g in groups)
    info(f"{len(groups)} groups, {copies} images; {human_size(spare)} in copies other than the best", as_json)


COMMANDS = [duplicates]
