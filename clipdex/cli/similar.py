"""`clipdex similar PATH_OR_ID`: more like a stored item, from its stored vector (no model load)."""

from __future__ import annotations

import click

from clipdex.cli.common import pass_state, runtime_option
from clipdex.cli.output import check_output_mode, hit_output_options, print_hits


@click.command()
@click.argument("item", metavar="PATH_OR_ID")
@click.option(
    "-k", "k", default=10, show_default=True, type=int, help="Number of results (the item included)."
)
@hit_output_options
@runtime_option
@pass_state
def similar(state, item, k, as_json, paths, null, runtime):
    """Items most like PATH_OR_ID (an image of the library, or an item id): the item itself first.

    All digits and not an existing file means an id. Ranked by the stored vector, so no model is
    loaded and nothing is re-encoded (--runtime is accepted, like every command that may encode).

    \b
    Examples:
      clipdex similar ~/Pictures/beach.jpg -k 5
      clipdex similar 17 --json
      clipdex similar ~/Pictures/beach.jpg --paths | xargs open
    """
    if k < 1:
        raise click.UsageError("-k must be at least 1")
    check_output_mode(as_json, paths, null)
    with state.open(runtime=runtime) as lib:
        results = lib.similar(item, k=k)
    print_hits(results, as_json, paths, null)


COMMANDS = [similar]
