"""`clipdex embed`: embed image files into clip-retrieval style shards (in-process or with Ray)."""

from __future__ import annotations

import click

from clipdex.cli.common import (
    emit_json,
    info,
    json_option,
    pass_state,
    problem,
    progress_bar,
    quiet_option,
    runtime_option,
    video_options,
)  # fmt: skip


@click.command("embed")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=bytes))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--model", default=None, help="open_clip model name, hf-hub:ORG/REPO, local-dir:PATH or a model dir."
)
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file for --model.")
@click.option(
    "--ray", "ray_address", default=None, is_flag=False, flag_value="local", metavar="[ADDRESS]",
    help="Run on Ray: alone starts a local cluster (or joins $RAY_ADDRESS); 'auto' or an address joins one.",
)  # fmt: skip
@click.option("--actors", default=None, type=click.IntRange(min=1),
              help="Ray encoder actors (default: one per GPU, else half the CPUs).")  # fmt: skip
@click.option("--shard-size", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Files per shard.")  # fmt: skip
@click.option(
    "--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per batch."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps (in-process runs).")
@click.option("--workers", default=None, type=click.IntRange(min=1), help="Decode threads (in-process runs).")
@video_options
@runtime_option
@json_option
@quiet_option
@pass_state
def embed(state, sources, out, model, pretrained, ray_address, actors, shard_size, batch_size, device,
          workers, no_video, video_interval, runtime, as_json, quiet):  # fmt: skip
    """Embed image and video files into shards: DIR/img_emb/*.npy (float16) + DIR/metadata/*.parquet.

    SOURCES are folders (scanned like `index`), image or video files, or .txt/.csv/.parquet lists
    of paths (s3:// and gs:// URLs through fsspec; videos from local or mounted files). A video
    gives a row per moment (t, t_end), as `index` stores it. Files that fail go to DIR/failed/.
    Re-running the same command skips finished shards. Import the result with
    `clipdex import-embeddings DIR`.
    Needs `pip install 'clipdex[scale]'`.

    \b
    Examples:
      clipdex embed ~/Pictures --out emb --model ViT-B-32
      clipdex embed paths.parquet --out emb --ray --shard-size 50000
      clipdex embed s3://bucket/photos/ --out emb --ray auto
      clipdex embed ~/Videos --out emb --video-interval 1   # a frame a second of every video
    """
    from clipdex.library import embed_sources

    with progress_bar("embedding", quiet) as bar, progress_bar("video", quiet, unit="s") as vbar:
        stats = embed_sources(
            list(sources), out, model=model, pretrained=pretrained, ray=ray_address, actors=actors,
            shard_size=shard_size, batch_size=batch_size, device=device, workers=workers, problem=problem,
            progress=bar, log=lambda msg: info(msg, quiet), runtime=runtime, videos=not no_video,
            video_interval=video_interval, video_progress=vbar,
        )  # fmt: skip
    if as_json:
        emit_json(stats.to_dict())
    s = stats
    info(
        f"{s.embedded} embedded"
        + (f" ({s.frames} of them video moments)" if s.frames else "")
        + f", {s.failed} failed in {s.shards} shards "
        f"({s.shards_written} written, {s.shards_skipped} already done) under {out}",
        quiet or as_json,
    )


COMMANDS = [embed]
