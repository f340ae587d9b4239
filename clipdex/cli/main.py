"""The `clipdex` command: click commands that parse, call the public API (`clipdex.library`) and print.

Heavy libraries (torch, open_clip, faiss) are imported inside commands, never here, so that
`clipdex --help` and usage errors are instant.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from typing import Any

import click

from clipdex import __version__
from clipdex.cli.common import State


class ClipdexGroup(click.Group):
    """Turns clipdex's own errors into one stderr line and exit code 1 (traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        from clipdex.errors import ClipdexError

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except ClipdexError as e:
            self._fail(ctx, str(e))
        except KeyboardInterrupt:
            click.echo("clipdex: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # `clipdex search … | head`: stdout closed early is not an error.
            sys.stderr.close()
            ctx.exit(0)
        except Exception as e:  # a damaged database, a full disk, a permission; or a bug
            from clipdex.errors import explain_environment_error

            state = ctx.find_object(State)
            known = explain_environment_error(e, state.database() if state else None)
            self._fail(ctx, known or f"unexpected {type(e).__name__}: {e} (run with --debug for details)")

    def _fail(self, ctx: click.Context, message: str) -> None:
        state = ctx.find_object(State)
        if (state and state.debug) or os.environ.get("CLIPDEX_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        click.echo(f"Error: {message.splitlines()[0] if message else 'failed'}", err=True)
        ctx.exit(1)


@click.group(cls=ClipdexGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="clipdex")
@click.option(
    "--library",
    type=click.Path(file_okay=False),
    default=None,
    help="Library directory (default: $CLIPDEX_LIBRARY or the platform data dir).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and what encodes (also CLIPDEX_DEBUG=1).")
@click.pass_context
def cli(ctx: click.Context, library: str | None, debug: bool) -> None:
    """clipdex: search your own images by text or by image, with CLIP.

    \b
    Examples:
      clipdex index ~/Pictures
      clipdex search "a dog on the beach" -k 5
      clipdex search --image holiday.jpg --json
      clipdex info
    """
    # A picture over the pixel limit is refused with one "skipped PATH: image too large" line;
    # Pillow's DecompressionBombWarning about it would be a second, Python-formatted one.
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit", category=Warning)
    ctx.obj = State(library, debug)
    if ctx.obj.debug:  # clipdex's debug log (which runtime encodes, …) on stderr
        import logging

        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("clipdex: debug: %(message)s"))
        logging.getLogger("clipdex").addHandler(handler)
        logging.getLogger("clipdex").setLevel(logging.DEBUG)


def _register() -> None:
    from clipdex.cli import (
        duplicates,
        embed,
        eval_cmds,
        finetune,
        library_cmds,
        model_cmds,
        serve,
        similar,
        watch,
    )

    for module in (library_cmds, model_cmds, finetune, similar, duplicates, eval_cmds, embed, serve, watch):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()

if __name__ == "__main__":
    cli()
