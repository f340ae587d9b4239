"""`clipdex similar PATH_OR_ID`: more like a stored item, from its stored vector (no model load)."""

from __future__ import annotations

import click

from clipdex.cli.common import emit_json, pass_state


@click.command()
@click.argument("item", metavar="PATH_OR_ID")
@click.option(
    "-k", "k", default=10, show_default=True, type=int, help="Number of results (the item included)."
)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one result per line (as `search --json`).")
@click.option("--paths", is_flag=True, help="Print bare absolute image paths, one per line.")
@click.option("-0", "null", is_flag=True, help="Like --paths, separated by NUL.")
@pass_state
def similar(state, item, k, as_json, paths, null):
    """Items most like PATH_OR_ID (an image of the library, or an item id): the item itself first.

    All digits and not an existing file means an id. Ranked by the stored vector, so no model is
    loaded and nothing is re-encoded.

    \b
    Examples:
      clipdex similar ~/Pictures/beach.jpg -k 5
      clipdex similar 17 --json
      clipdex similar ~/Pictures/beach.jpg --paths | xargs open
    """
    from clipdex.cli.library_cmds import _table

    if k < 1:
        raise click.UsageError("-k must be at least 1")
    if sum([as_json, paths, null]) > 1:
        raise click.UsageError("--json, --paths and -0 are exclusive")
    with state.open() as lib:
        results = lib.similar(item, k=k)
    if as_json:
        for r in results:
            emit_json(r.to_dict())
    elif paths or null:
        for r in results:
            if r.path is not None:
                click.echo(r.path, nl=not null)
                if null:
                    click.echo("\0", nl=False)
    else:
        _table(results)


COMMANDS = [similar]
