"""Model commands: `model init` and `use-model`."""

from __future__ import annotations

import click

from clipdex.cli.common import (
    drop_option,
    emit_json,
    info,
    json_option,
    pass_state,
    problem,
    progress_bar,
    quiet_option,
)


@click.group("model")
def model_group() -> None:
    """Create and manage models."""


@model_group.command("init")
@click.argument("arch_or_json")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Directory to write the model to."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed for the initial weights.")
def init(arch_or_json: str, out: str, seed: int) -> None:
    """Write a randomly initialised model (local-dir format) for ARCH_OR_JSON.

    ARCH_OR_JSON is an open_clip architecture name (e.g. ViT-B-32) or a JSON model config.

    \b
    Examples:
      clipdex model init ViT-B-32 --out ./vit-b-32-random
      clipdex model init tiny.json --out ./tiny --seed 1
    """
    from clipdex.library import init_model

    path = init_model(arch_or_json, out, seed=seed)
    click.echo(f"local-dir:{path}")


@click.command("use-model")
@click.argument("model_dir")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@drop_option
@json_option
@quiet_option
@pass_state
def use_model(
    state, model_dir: str, device: str, drop_unembeddable: bool, as_json: bool, quiet: bool
) -> None:
    """Make MODEL_DIR the library's model and re-embed every image and text.

    Searches keep working on the old vectors until the re-embedding is complete; an interrupted
    run resumes where it stopped.

    \b
    Example:
      clipdex use-model ~/.local/share/clipdex/default/models/finetune-20260101-120000
    """
    with state.open(device=device) as lib, progress_bar("re-embedding", quiet) as bar:
        done = lib.use_model(model_dir, problem=problem, progress=bar, drop_unembeddable=drop_unembeddable)
        spec = str(lib.spec)
    if as_json:
        emit_json({"model": spec, "reembedded": done.total, "dropped": done.dropped})
    info(f"re-embedded {done.total} items with {spec}; {done.dropped} dropped", quiet or as_json)


COMMANDS = [model_group, use_model]
