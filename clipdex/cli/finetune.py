"""`clipdex finetune`: adapt the library's model to image–caption pairs, show held-out recall."""

from __future__ import annotations

import time
from pathlib import Path

import click

from clipdex.cli.common import drop_option, emit_json, info, json_option, pass_state, problem, quiet_option


@click.command("finetune")
@click.argument("pairs", type=click.Path(exists=True), required=False)
@click.option("--val", "val_pairs", type=click.Path(exists=True), default=None,
              help="Held-out PAIRS for evaluation (default: a seeded split of PAIRS).")  # fmt: skip
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Share of unique images held out when --val is not given.")  # fmt: skip
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
@drop_option
@json_option
@quiet_option
@pass_state
def finetune_cmd(state, pairs, val_pairs, val_fraction, epochs, batch_size, lr, weight_decay, warmup,
                 accum_steps, lock_image, lock_text, unlock_last, patience, wise, seed, out, apply, device,
                 drop_unembeddable, as_json, quiet):  # fmt: skip
    """Fine-tune the library's model on image–caption PAIRS and report held-out recall.

    PAIRS is a .csv/.tsv (with a header) or .jsonl with columns `image` and `caption` (image paths
    relative to the file's folder, or absolute), or a folder of images with sidecar captions
    (photo.jpg + photo.txt). Without PAIRS, the library's own captioned images are used.
    Recall@1/5/10 (text->image and image->text) is measured on held-out
    images before and after; the epoch with the best mean recall is kept. The model is saved in
    open_clip's local-dir format; --apply also re-embeds the library with it.

    \b
    Examples:
      clipdex finetune --apply                  # the library's sidecar captions
      clipdex finetune captions.csv --epochs 5
      clipdex finetune ~/Pictures/captioned --lock-image --unlock-last 2 --apply
      clipdex finetune train.jsonl --val val.jsonl --wise 0.5 --json
    """
    from clipdex.retrieval.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
        accum_steps=accum_steps, lock_image=lock_image, lock_text=lock_text, unlock_last=unlock_last,
        patience=patience, wise=wise, seed=seed, quiet=quiet,
    )  # fmt: skip
    quiet_text = quiet or as_json

    def epoch_line(e: dict) -> None:
        v = e["val"]
        info(f"epoch {e['epoch']}/{epochs}: loss {e['loss']:.4f}, val t2i R@5 {v['t2i_r5']:.3f}, "
             f"i2t R@5 {v['i2t_r5']:.3f} ({e['seconds']:.1f}s)", quiet_text)  # fmt: skip

    with state.open(device=device) as lib:
        train, val, empty = _read_inputs(lib, pairs, val_pairs, val_fraction, seed)
        lm = lib.model
        out_dir = out or _new_model_dir(lib.path / "models")
        info(f"fine-tuning {lm.spec} on {len(train)} pairs, {len(val)} held out", quiet_text)
        result = finetune(lm, train, val, cfg, out_dir, progress=epoch_line)
        for path, reason in result.bad_images:
            problem(path, reason)
        done = (
            lib.use_model(result.model, problem=problem, drop_unembeddable=drop_unembeddable)
            if apply
            else None
        )
        reembedded = done.total if done else None

    summary = {
        "model": result.model, "train_pairs": result.train_pairs, "val_pairs": result.val_pairs,
        "skipped": result.skipped + empty, "before": result.before, "after": result.after,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
    }  # fmt: skip
    if done is not None:
        summary["reembedded"], summary["dropped"] = done.total, done.dropped
    if as_json:
        emit_json(summary)
    _table(result, empty, reembedded, quiet_text)


def _new_model_dir(parent: Path) -> Path:
    """``finetune-YYYYmmdd-HHMMSS`` under ``parent``, with a suffix if that name is taken."""
    base = time.strftime("finetune-%Y%m%d-%H%M%S")
    path, n = parent / base, 1
    while path.exists():
        n += 1
        path = parent / f"{base}-{n}"
    return path


def _read_inputs(lib, pairs, val_pairs, val_fraction: float, seed: int) -> tuple[list, list, int]:
    """Training and held-out pairs: from PAIRS, or from the library's own image-caption links."""
    from clipdex.errors import ClipdexError
    from clipdex.retrieval.pairs import Pair, read_pairs, split_pairs

    if pairs is None:
        train = [Pair(path, caption) for path, caption in lib.caption_pairs()]
        if not train:
            raise ClipdexError(
                f"the library at {lib.path} has no captioned images (sidecar .txt files); give PAIRS"
            )
        empty = 0
    else:
        train, empty = read_pairs(pairs)
    if val_pairs:
        val, val_empty = read_pairs(val_pairs)
        return train, val, empty + val_empty
    train, val = split_pairs(train, val_fraction, seed)
    return train, val, empty


def _table(result, empty: int, reembedded: int | None, quiet: bool) -> None:
    if quiet:
        return
    lines = [f"{'held-out recall':<16}{'before':>8}{'after':>8}"]
    for key in result.before:
        direction, k = key.split("_")
        name = f"{'text->image' if direction == 't2i' else 'image->text'} R@{k[1:]}"
        lines.append(f"{name:<16}{result.before[key]:>8.3f}{result.after[key]:>8.3f}")
    lines.append(
        f"{result.train_pairs} training / {result.val_pairs} held-out pairs; skipped {result.skipped} "
        f"with a bad image, {empty} with an empty caption; best epoch {result.best_epoch} of "
        f"{result.epochs_run}; {result.seconds:.0f}s"
    )
    lines.append(f"saved {result.model}")
    if reembedded is None:
        lines.append(f"use it with: clipdex use-model {result.model[len('local-dir:') :]}")
    else:
        lines.append(f"library now uses it ({reembedded} items re-embedded)")
    for line in lines:
        info(line)


COMMANDS = [finetune_cmd]
