"""`clipdex watch`: index folders, then follow them (new pictures appear by themselves)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import click

from clipdex.cli.common import (
    emit_json,
    info,
    json_option,
    model_options,
    pass_state,
    problem,
    quiet_option,
    runtime_option,
)


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=bytes))
@click.option("--debounce", default=1.0, show_default=True, type=click.FloatRange(min=0), metavar="S",
              help="Take a file once its size and mtime held this many seconds.")  # fmt: skip
@click.option("--include-hidden", is_flag=True, help="Also index hidden files and folders.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Pictures encoded and committed per batch, at most.")  # fmt: skip
@click.option(
    "--workers", default=None, type=click.IntRange(min=1), help="Decode threads (default: all CPUs)."
)
@click.option("--rescan-every", default=3600.0, show_default=True, type=click.FloatRange(min=0), metavar="S",
              help="A stat-only rescan this often, for events the OS lost silently (0: never).")  # fmt: skip
@model_options
@runtime_option
@json_option
@quiet_option
@pass_state
def watch(state, folders, debounce, include_hidden, batch_size, workers, rescan_every, model, pretrained,
          device, runtime, as_json, quiet):  # fmt: skip
    """Index FOLDERS, then follow them: new, changed, moved and deleted pictures are applied as
    `index` would, batch by batch, until Ctrl-C or SIGTERM (the batch under way is finished; exit 0).

    A file is taken once its size and mtime held for --debounce seconds, so a picture still being
    copied is never indexed half written. Each batch is one transaction; the writer lock is held
    only while it commits, so `index` of another folder or `add-texts` can run meanwhile. A folder
    that disappears (an unmounted disk) is waited for, its pictures kept. What each batch applied
    goes to stderr; --json prints one line per batch on stdout.

    \b
    Examples:
      clipdex watch ~/Pictures
      clipdex watch ~/Pictures /mnt/camera --json
      clipdex watch ~/Pictures --debounce 3     # slow network drive
    """
    lib = state.open(create=True, model=model, pretrained=pretrained, device=device, runtime=runtime)

    def on_batch(batch) -> None:
        if as_json:
            emit_json(batch.to_dict())
        b = batch
        info(f"clipdex: {b.added} added, {b.updated} updated, {b.moved} moved, {b.removed} removed, "
             f"{b.failed} failed", quiet or as_json)  # fmt: skip

    def on_ready() -> None:
        shown = ", ".join(click.format_filename(f) for f in folders)
        info(f"clipdex: watching {shown} (Ctrl-C stops)", quiet)

    with lib, _stopping_on_signals(lib):
        lib.watch(
            list(folders), on_batch=on_batch, debounce=debounce, include_hidden=include_hidden,
            batch_size=batch_size, workers=workers, rescan_every=rescan_every, problem=problem,
            on_ready=on_ready,
        )  # fmt: skip
    info("clipdex: stopped", quiet)


@contextmanager
def _stopping_on_signals(lib) -> Iterator[None]:
    """SIGINT and SIGTERM end the watch after the batch under way (not a KeyboardInterrupt mid-commit)."""
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in old:
        signal.signal(sig, lambda signum, frame: lib.stop())
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


COMMANDS = [watch]
