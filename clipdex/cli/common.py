"""Shared CLI pieces: the library option context, output helpers, progress bars, errors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click


class State:
    """What the top-level group parsed, handed to every command."""

    def __init__(self, library: str | None, debug: bool):
        self.library = library
        self.debug = debug or os.environ.get("CLIPDEX_DEBUG", "") not in ("", "0")

    def open(self, create: bool = False, **kwargs: Any) -> Any:
        from clipdex.library import Library

        return Library.open(self.library, create=create, warn=warning, notice=notice, **kwargs)

    def database(self) -> str:
        """The library's database file (for error messages)."""
        from clipdex.library import database_path

        return str(database_path(self.library or None))


pass_state = click.make_pass_decorator(State)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(f)


def quiet_option(f: Callable) -> Callable:
    return click.option(
        "--quiet",
        "-q",
        is_flag=True,
        help="No progress bar or summary (per-file problems still go to stderr).",
    )(f)


def drop_option(f: Callable) -> Callable:
    return click.option(
        "--drop-unembeddable", is_flag=True,
        help="When re-embedding, drop images with no readable file (imported, missing) instead of refusing.",
    )(f)  # fmt: skip


def runtime_option(f: Callable) -> Callable:
    from clipdex.library import RUNTIMES

    return click.option(
        "--runtime", type=click.Choice(RUNTIMES), default=None,
        help="What encodes: auto (ONNX Runtime where it has a provider for the device, else torch; "
        "default, or $CLIPDEX_RUNTIME), onnx or torch.",
    )(f)  # fmt: skip


def video_options(f: Callable) -> Callable:
    """``--no-video`` and ``--video-interval S`` (of `index` and `embed`)."""
    f = click.option(
        "--video-interval", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
        metavar="S", help="Seconds between the frames kept of a video.",
    )(f)  # fmt: skip
    return click.option(
        "--no-video", "no_video", is_flag=True, help="Skip videos (in a library, those indexed before stay)."
    )(f)


def precision_options(f: Callable) -> Callable:
    from clipdex.library import PRECISIONS

    f = click.option(
        "--force-int8", is_flag=True,
        help="Use int8 even where it keeps under 90% of your pictures' top-10 neighbours.",
    )(f)  # fmt: skip
    return click.option(
        "--precision", type=click.Choice(PRECISIONS), default=None,
        help="fp32 or int8 (ONNX Runtime, CPU; about 2.7x faster). Remembered by the library; "
        "switching re-embeds.",
    )(f)  # fmt: skip


def model_options(f: Callable) -> Callable:
    f = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")(f)
    f = click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file for --model.")(f)
    f = click.option(
        "--model", default=None, help="open_clip model name, hf-hub:ORG/REPO, local-dir:PATH or a model dir."
    )(f)
    return f


def emit_json(obj: Any) -> None:
    """One JSON object on one line of stdout."""
    click.echo(json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")))


def info(msg: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(msg, err=True)


def notice(message: str) -> None:
    """What the engine says it does on stderr (an ONNX export and its figures)."""
    click.echo(f"clipdex: {message}", err=True)


def warning(message: str) -> None:
    """A one-line warning on stderr (results still go to stdout)."""
    click.echo(f"clipdex: warning: {message}", err=True)


def problem(path: str, reason: str) -> None:
    """Per-file problems always go to stderr, one line each."""
    click.echo(f"clipdex: skipped {path}: {reason}", err=True)


@contextmanager
def step_bar(quiet: bool) -> Iterator[Callable[[int, int, dict], None] | None]:
    """A tqdm bar of optimizer steps on stderr (epoch, loss, lr beside it), only on a terminal and
    unless quiet; yields an on_step(step, total, figures) callback."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(file=sys.stderr, unit="step", leave=False)

    def update(step: int, total: int, figures: dict) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix(epoch=figures["epoch"], loss=f"{figures['loss']:.3f}", lr=f"{figures['lr']:.2e}")

    try:
        yield update
    finally:
        bar.close()


@contextmanager
def progress_bar(desc: str, quiet: bool, unit: str = "img") -> Iterator[Callable[[int, int], None] | None]:
    """A tqdm bar on stderr, only on a terminal and unless quiet; yields an update(done, total)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
