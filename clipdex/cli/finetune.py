"""`clipdex finetune`: adapt the library's model to image–caption pairs, show held-out recall."""

from __future__ import annotations

import click

from clipdex.cli.common import (
    drop_option,
    emit_json,
    info,
    json_option,
    pass_state,
    problem,
    quiet_option,
    runtime_option,
    step_bar,
)  # fmt: skip


@click.command("finetune")
@click.argument("pairs", type=click.Path(exists=True), required=False)
@click.option("--val", "val_pairs", type=click.Path(exists=True), default=None,
              help="Held-out PAIRS for evaluation (default: a seeded split of PAIRS).")  # fmt: skip
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Share of unique images held out to choose the epoch.")  # fmt: skip
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Share of unique images held out to report before/after on (0: none).")  # fmt: skip
@click.option("--captions-from", type=click.Choice(["sidecars", "ocr", "all"]), default=None,
              help="Without PAIRS: the library's sidecar captions (default), the text read in its "
                   "pictures (index --ocr), or all.")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Pairs per contrastive batch (every other pair in it is a negative).")  # fmt: skip
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True,
              help="Peak learning rate (for pretrained weights; random init needs ~1e-3).")  # fmt: skip
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Warmup in optimizer steps (default: 5% of all steps).")  # fmt: skip
@click.option("--accum-steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="Accumulate N batches into one step; all N*batch pairs act as negatives.")  # fmt: skip
@click.option("--lock-image", is_flag=True, help="Freeze the image tower.")
@click.option("--lock-text", is_flag=True, help="Freeze the text tower.")
@click.option("--unlock-last", type=click.IntRange(min=0), default=0, show_default=True,
              help="Train the last N blocks (and output head) of a locked tower.")  # fmt: skip
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Stop after N epochs without validation improvement (default: off).")  # fmt: skip
@click.option("--wise", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Blend weights (1-A)*start + A*tuned; 1 = plain fine-tuned, 0 = the start.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output model directory (default: LIBRARY/models/finetune-TIMESTAMP).")  # fmt: skip
@click.option("--apply", is_flag=True, help="Then make the fine-tuned model the library's and re-embed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--cache-mb", type=click.IntRange(min=0), default=1024, show_default=True,
              help="Decoded images kept in memory (MiB); others are decoded again when used.")  # fmt: skip
@click.option("--grad-checkpointing/--no-grad-checkpointing", default=None,
              help="Trade compute for memory (default: only after a CUDA out-of-memory).")  # fmt: skip
@drop_option
@runtime_option
@json_option
@quiet_option
@pass_state
def finetune_cmd(state, pairs, val_pairs, val_fraction, test_fraction, captions_from, epochs, batch_size, lr,
                 weight_decay, warmup, accum_steps, lock_image, lock_text, unlock_last, patience, wise, seed,
                 out, apply, device, cache_mb, grad_checkpointing, drop_unembeddable, runtime, as_json,
                 quiet):  # fmt: skip
    """Fine-tune the library's model on image–caption PAIRS and report held-out recall.

    PAIRS is a .csv/.tsv (with a header) or .jsonl with columns `image` and `caption` (image paths
    relative to the file's folder, or absolute), or a folder of images with sidecar captions
    (photo.jpg + photo.txt). Without PAIRS, the library's own captioned images are used.
    Unique images are split (seeded) into training, validation and test: the epoch with the best
    mean Recall@1/5/10 on validation is kept, and recall before and after is reported on test.
    The model is saved in open_clip's local-dir format; --apply also re-embeds the library with it.

    \b
    Examples:
      clipdex finetune --apply                  # the library's sidecar captions
      clipdex finetune captions.csv --epochs 5
      clipdex finetune ~/Pictures/captioned --lock-image --unlock-last 2 --apply
      clipdex finetune train.jsonl --val val.jsonl --wise 0.5 --json
      clipdex finetune --captions-from ocr --apply   # screenshots teach it their words
    """
    from clipdex.library import FinetuneConfig

    if pairs is not None and captions_from is not None:
        raise click.UsageError("--captions-from chooses the library's own captions: give it or PAIRS")

    cfg = FinetuneConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
        accum_steps=accum_steps, lock_image=lock_image, lock_text=lock_text, unlock_last=unlock_last,
        patience=patience, wise=wise, seed=seed, cache_mb=cache_mb,
        grad_checkpointing=grad_checkpointing,
    )  # fmt: skip
    quiet_text = quiet or as_json

    def epoch_line(e: dict) -> None:
        v = e["val"]
        info(f"epoch {e['epoch']}/{epochs}: loss {e['loss']:.4f}, val t2i R@5 {v['t2i_r5']:.3f}, "
             f"i2t R@5 {v['i2t_r5']:.3f} ({e['seconds']:.1f}s)", quiet_text)  # fmt: skip

    def on_start(model: str, n_train: int, n_val: int, n_test: int) -> None:
        info(f"fine-tuning {model} on {n_train} pairs; {n_val} validation, {n_test} test pairs", quiet_text)

    with state.open(device=device, runtime=runtime) as lib, step_bar(quiet) as on_step:
        result = lib.finetune(
            pairs, val=val_pairs, val_fraction=val_fraction, test_fraction=test_fraction, config=cfg,
            out=out, apply=apply, drop_unembeddable=drop_unembeddable, progress=epoch_line,
            problem=problem, on_start=on_start, on_step=on_step, captions_from=captions_from or "sidecars",
        )  # fmt: skip
    if result.report_split == "val":
        info("note: too few images for a separate test split; before/after are measured on the "
             "validation split that also chose the epoch (they flatter the result)", quiet)  # fmt: skip
    summary = {
        "model": result.model, "train_pairs": result.train_pairs, "val_pairs": result.val_pairs,
        "test_pairs": result.test_pairs, "skipped": result.skipped + result.empty_captions,
        "report_split": result.report_split, "before": result.before, "after": result.after,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
    }  # fmt: skip
    if result.reembedded is not None:
        summary["reembedded"], summary["dropped"] = result.reembedded, result.dropped
    if as_json:
        emit_json(summary)
    _table(result, quiet_text)


def _table(result, quiet: bool) -> None:
    if quiet:
        return
    lines = [f"{result.report_split + ' recall':<16}{'before':>8}{'after':>8}"]
    for key in result.before:
        direction, k = key.split("_")
        name = f"{'text->image' if direction == 't2i' else 'image->text'} R@{k[1:]}"
        lines.append(f"{name:<16}{result.before[key]:>8.3f}{result.after[key]:>8.3f}")
    lines.append(
        f"{result.train_pairs} training / {result.val_pairs} validation / {result.test_pairs} test pairs; "
        f"skipped {result.skipped} with a bad image, {result.empty_captions} with an empty caption; "
        f"best epoch (on validation) {result.best_epoch} of "
        f"{result.epochs_run}; {result.seconds:.0f}s"
    )
    lines.append(f"saved {result.model}")
    if result.reembedded is None:
        lines.append(f"use it with: clipdex use-model {result.model[len('local-dir:') :]}")
    else:
        lines.append(f"library now uses it ({result.reembedded} items re-embedded)")
    for line in lines:
        info(line)


COMMANDS = [finetune_cmd]
