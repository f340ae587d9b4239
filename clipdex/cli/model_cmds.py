"""Model commands: `model init`, `model export-onnx` and `use-model`."""

from __future__ import annotations

import click

from clipdex.cli.common import (
    drop_option,
    emit_json,
    info,
    json_option,
    pass_state,
    precision_options,
    problem,
    progress_bar,
    quiet_option,
    runtime_option,
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
@click.option("--text-tower", type=click.Choice(["clip", "hf"]), default="clip", show_default=True,
              help="clip: open_clip's own text transformer; hf: a small Hugging Face transformer "
                   "(XLM-R style) with its own tokenizer, for any language.")  # fmt: skip
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False),
              help="With --text-tower hf: train the tokenizer on this UTF-8 file (one text a line) "
                   "instead of the built-in multilingual corpus.")  # fmt: skip
@click.option("--tokenizer", "tokenizer", type=click.Path(exists=True),
              help="With --text-tower hf: use this tokenizer (a tokenizer.json file or a folder of "
                   "Hugging Face tokenizer files) instead of training one.")  # fmt: skip
@click.option("--vocab-size", type=click.IntRange(min=16), help="With --text-tower hf: the trained "
              "tokenizer's largest vocabulary (default 8000; a small corpus gives fewer).")  # fmt: skip
def init(
    arch_or_json: str, out: str, seed: int, text_tower: str, corpus: str | None, tokenizer: str | None,
    vocab_size: int | None,
) -> None:  # fmt: skip
    """Write a randomly initialised model (local-dir format) for ARCH_OR_JSON.

    ARCH_OR_JSON is an open_clip architecture name (e.g. ViT-B-32) or a JSON model config. With
    --text-tower hf the folder also holds the transformer's config.json and the tokenizer files, and
    a JSON config may size the transformer with an "hf_text_config" object (transformers config
    keys, e.g. {"hidden_size": 128, "num_hidden_layers": 2}). Everything is made offline.

    \b
    Examples:
      clipdex model init ViT-B-32 --out ./vit-b-32-random
      clipdex model init tiny.json --out ./tiny --seed 1
      clipdex model init ViT-B-32 --text-tower hf --corpus captions-zh.txt --out ./zh-model
    """
    from clipdex.library import init_model

    extra = {"text_tower": text_tower, "corpus": corpus, "tokenizer": tokenizer, "vocab_size": vocab_size}
    path = init_model(arch_or_json, out, seed=seed, **extra)
    click.echo(f"local-dir:{path}")


@model_group.command("export-onnx")
@click.option("--int8", is_flag=True, help="Also write int8 (dynamically quantised) graphs.")
@click.option("--force-int8", is_flag=True,
              help="Write int8 even where it keeps < 90% of your pictures' top-10 neighbours.")  # fmt: skip
@json_option
@pass_state
def export_onnx(state, int8: bool, force_int8: bool, as_json: bool) -> None:
    """Export the library's model to ONNX graphs, so that searches run on ONNX Runtime without torch.

    The graphs go to LIBRARY/models/onnx-<fingerprint>/ and are checked against torch before they
    are kept (cosine >= 0.99999 on probe images and texts); searches then use them by default
    (`search --runtime torch` does not).

    \b
    Example:
      clipdex model export-onnx
    """
    with state.open(force_int8=force_int8) as lib:
        manifest = lib.export_onnx(int8=int8, progress=lambda msg: info(msg, as_json))
    if as_json:
        emit_json({k: manifest[k] for k in ("folder", "model", "precisions", "fp32_min_cosine")})
        return
    click.echo(manifest["folder"])
    worst = min(manifest["fp32_min_cosine"].values())
    info(f"ONNX graphs ({', '.join(manifest['precisions'])}) agree with torch: cosine >= {worst:.6f}")


@click.command("use-model")
@click.argument("model_dir")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@drop_option
@runtime_option
@precision_options
@json_option
@quiet_option
@pass_state
def use_model(
    state, model_dir: str, device: str, drop_unembeddable: bool, runtime: str | None, precision: str | None,
    force_int8: bool, as_json: bool, quiet: bool,
) -> None:  # fmt: skip
    """Make MODEL_DIR the library's model and re-embed every image and text.

    Searches keep working on the old vectors until the re-embedding is complete; an interrupted
    run resumes where it stopped.

    \b
    Examples:
      clipdex use-model ~/.local/share/clipdex/default/models/finetune-20260101-120000
      clipdex use-model ViT-B-32@laion2b_s34b_b79k --precision int8
    """
    lib = state.open(device=device, runtime=runtime, force_int8=force_int8)
    with lib, progress_bar("re-embedding", quiet) as bar:
        done = lib.use_model(
            model_dir, problem=problem, progress=bar, drop_unembeddable=drop_unembeddable, precision=precision
        )
        spec = str(lib.spec)
    if as_json:
        emit_json({"model": spec, "reembedded": done.total, "dropped": done.dropped})
    info(f"re-embedded {done.total} items with {spec}; {done.dropped} dropped", quiet or as_json)


COMMANDS = [model_group, use_model]
