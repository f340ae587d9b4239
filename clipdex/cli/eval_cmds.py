"""`clipdex eval` (compare models on your own pairs) and `clipdex explain` (why an image matches)."""

from __future__ import annotations

from pathlib import Path

import click

from clipdex.cli.common import emit_json, info, json_option, notice, pass_state, problem, runtime_option

ROWS = [
    ("text->image R@1", "t2i_r1"), ("text->image R@5", "t2i_r5"), ("text->image R@10", "t2i_r10"),
    ("text->image median rank", "t2i_median_rank"), ("text->image mAP", "t2i_map"),
    ("image->text R@1", "i2t_r1"), ("image->text R@5", "i2t_r5"), ("image->text R@10", "i2t_r10"),
    ("image->text median rank", "i2t_median_rank"), ("image->text mAP", "i2t_map"),
]  # fmt: skip


def _library_model(state) -> str | None:
    """The library's model as a ``--model`` value, or None when there is no library (or no model yet)."""
    from clipdex.library import database_path

    if not database_path(state.library or None).is_file():
        return None
    with state.open() as lib:
        return lib.spec.to_arg() if lib.spec else None


@click.command("eval")
@click.argument("pairs", type=click.Path(exists=True), required=False)
@click.option(
    "--captions-from",
    type=click.Choice(["sidecars", "ocr", "all"]),
    default=None,
    help="Instead of PAIRS: the library's sidecar captions, its text read (index --ocr), or all.",
)
@click.option("--model", "models", multiple=True,
              help="A model to compare (repeatable): ARCH@TAG, hf-hub:ORG/REPO, local-dir:PATH or a "
                   "model dir. Default: the library's model (or the default model).")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@runtime_option
@json_option
@pass_state
def eval_cmd(state, pairs, captions_from, models, device, batch_size, runtime, as_json):
    """Compare models on your own image–caption PAIRS before indexing with one.

    PAIRS is read like `clipdex finetune` reads it (.csv/.tsv/.jsonl with `image` and `caption`
    columns, or a folder with sidecar captions). For each model: text->image and image->text
    Recall@1/5/10, median rank and mAP, on the same decoded images. A caption shared by several
    images counts all of them as right answers (and an image with several captions, all of those);
    a wrong answer with exactly the same score as a right one ranks before it.

    \b
    Examples:
      clipdex eval captions.csv
      clipdex eval ~/Pictures/captioned --model ViT-B-32@laion2b_s34b_b79k --model ViT-B-16@dfn2b
      clipdex eval captions.csv --model ./my-finetuned-model --json
      clipdex eval --captions-from ocr --model ViT-B-32@laion2b_s34b_b79k   # on your screenshots
    """
    from clipdex import evaluate

    if (pairs is None) == (captions_from is None):
        raise click.UsageError("give PAIRS or --captions-from (the library's own captions)")
    if captions_from is not None:
        with state.open() as lib:
            pairs = lib.caption_pairs(captions_from)

    chosen = list(models) or [_library_model(state)]
    results = evaluate(pairs, chosen, device=device, batch_size=batch_size, problem=problem, runtime=runtime,
                       notice=notice)  # fmt: skip
    if as_json:
        for row in results:
            emit_json(row)
        return
    names = [_short(r["model"]) for r in results]
    width = max(10, *(len(n) + 2 for n in names))
    lines = [f"{'':<25}" + "".join(f"{n:>{width}}" for n in names)]
    for label, key in ROWS:
        cells = [f"{r[key]:.1f}" if "median" in key else f"{r[key]:.3f}" for r in results]
        lines.append(f"{label:<25}" + "".join(f"{c:>{width}}" for c in cells))
    click.echo("\n".join(lines))
    info(f"{results[0]['pairs']} pairs; " + "; ".join(f"{n} = {r['model']}" for n, r in zip(names, results)))


def _short(model: str) -> str:
    """A column heading: the folder name of a local-dir model, else the spec itself."""
    return Path(model[len("local-dir:") :]).name if model.startswith("local-dir:") else model


@click.command("explain")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.argument("text", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Heat map PNG to write.")
@click.option("--model", default=None, help="Model to explain with (default: the library's, or the default).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@json_option
@pass_state
def explain_cmd(state, image, text, out, model, device, as_json):
    """Show which regions of IMAGE raise its similarity to TEXT; print the score.

    Occlusion sensitivity: square windows of the picture are covered one at a time (with its median
    colour) and all covered copies go through the model in batches; a region is hot when covering
    it lowers the image–text cosine. Works for every open_clip architecture.

    \b
    Example:
      clipdex explain beach.jpg "a dog on the beach" --out heat.png
    """
    from clipdex.library import explain_file

    result, picture = explain_file(image, " ".join(text), model or _library_model(state), device)
    out_path = Path(out).expanduser()
    try:
        out_path.write_bytes(result.png(picture))
    except OSError as e:
        from clipdex.errors import ClipdexError

        raise ClipdexError(f"cannot write {out_path}: {e.strerror or e}") from e
    if as_json:
        emit_json({"score": round(result.score, 6), "out": str(out_path.absolute())})
    else:
        click.echo(f"{result.score:.4f}")
        info(f"heat map written to {out_path}")


COMMANDS = [eval_cmd, explain_cmd]
