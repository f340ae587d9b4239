"""Library commands: index, search, add-texts, import-embeddings, info."""

from __future__ import annotations

import click

from clipdex.cli.common import (
    drop_option,
    emit_json,
    info,
    json_option,
    model_options,
    pass_state,
    precision_options,
    problem,
    progress_bar,
    quiet_option,
    runtime_option,
    video_options,
)
from clipdex.cli.output import check_output_mode, hit_output_options, human_size, print_hits
from clipdex.library import INDEX_TYPES, ONDISK  # stdlib only: no torch/faiss for --help

_TYPES = ", ".join(f"{t} (large-library mode)" if t == ONDISK else t for t in INDEX_TYPES)
index_type_option = click.option(
    "--index-type",
    default=None,
    help=f"FAISS index: auto (by size and memory; default), {_TYPES}. Remembered by the library.",
)


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=bytes))
@model_options
@click.option(
    "--batch-size",
    default=None,
    type=click.IntRange(min=1),
    help="Images per batch (default: $CLIPDEX_BATCH_SIZE, else 32 on CPU, 256 on CUDA).",
)
@click.option(
    "--workers", default=None, type=click.IntRange(min=1), help="Decode threads (default: all CPUs)."
)
@click.option("--include-hidden", is_flag=True, help="Also index hidden files and folders.")
@click.option("--reembed", is_flag=True, help="Re-embed every item (required to switch the library's model).")
@drop_option
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Retry files that failed to decode before (default: only once changed).",
)
@click.option("--exact-decode", is_flag=True, help="Never decode large JPEGs at reduced scale.")
@click.option("--ocr/--no-ocr", default=None,
              help="Read the text in pictures (Chinese, English; remembered); --no-ocr stops.")  # fmt: skip
@video_options
@index_type_option
@runtime_option
@precision_options
@json_option
@quiet_option
@pass_state
def index(state, folders, model, pretrained, device, batch_size, workers, include_hidden, reembed,
          drop_unembeddable, retry_failed, exact_decode, ocr, no_video, video_interval, index_type, runtime,
          precision, force_int8, as_json, quiet):  # fmt: skip
    """Index image (and video) FOLDERS: add new files, re-embed changed ones, drop deleted ones.

    Sidecar captions (photo.jpg + photo.txt) become searchable texts. A changed file keeps its id;
    a file moved within FOLDERS keeps its id and vector (no re-encoding). Files that fail to decode
    are remembered and skipped until they change (--retry-failed retries them).

    \b
    Examples:
      clipdex index ~/Pictures
      clipdex index ~/Pictures /mnt/archive --json
      clipdex index ~/Pictures --model ViT-B-16 --pretrained laion2b_s34b_b88k --reembed
      clipdex index scans --model local-dir:./my-finetuned-model
      clipdex index ~/Pictures --precision int8 --reembed   # faster encoding on a CPU
      clipdex index ~/Screenshots --ocr    # read the text in them: search --words finds it
      clipdex index ~/Videos --video-interval 1    # a frame a second of every video
    """
    lib = state.open(create=True, model=model, pretrained=pretrained, device=device, runtime=runtime,
                     precision=precision, force_int8=force_int8)  # fmt: skip
    with lib, progress_bar("indexing", quiet) as bar, progress_bar("video", quiet, unit="s") as vbar:
        stats = lib.index(
            list(folders), include_hidden=include_hidden, reembed=reembed, batch_size=batch_size,
            workers=workers, exact_decode=exact_decode, index_type=index_type, retry_failed=retry_failed,
            drop_unembeddable=drop_unembeddable, ocr=ocr, problem=problem, progress=bar,
            videos=not no_video, video_interval=video_interval, video_progress=vbar,
        )  # fmt: skip
    if as_json:
        emit_json(stats.to_dict())
    s = stats
    info(
        f"{s.added} added, {s.updated} updated, {s.moved} moved, {s.removed} removed, "
        f"{s.unchanged} unchanged, "
        f"{s.failed} failed, {s.skipped_failed} skipped as failed before; texts: {s.texts_added} added, "
        f"{s.texts_updated} updated, {s.texts_removed} removed"
        + (f"; {s.frames} video moments stored" if s.frames else "")
        + (f"; {s.dropped} dropped (no file to re-embed)" if s.dropped else "")
        + (f"; text read in {s.ocr_read} pictures ({s.ocr_failed} failed)" if s.ocr_read is not None else ""),
        quiet or as_json,
    )


class DateParam(click.ParamType):
    """An ISO 8601 date or date-time (a date alone is local midnight); checked at parse time."""

    name = "DATE"

    def convert(self, value, param, ctx):
        from clipdex.index.filters import parse_date

        try:
            parse_date(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return value


@click.command()
@click.argument("text", nargs=-1)
@click.option("--image", "images", multiple=True, type=click.Path(path_type=bytes),
              help="Look for images like this one (repeatable; combines with TEXT).")  # fmt: skip
@click.option("--not", "not_texts", multiple=True, help="Steer away from this text (repeatable).")
@click.option("--not-image", "not_images", multiple=True, type=click.Path(path_type=bytes),
              help="Steer away from images like this one (repeatable).")  # fmt: skip
@click.option("-k", "k", default=10, show_default=True, type=int, help="Number of results.")
@click.option("--target", type=click.Choice(["images", "texts"]), default="images", show_default=True,
              help="Search stored images, or stored texts (captions and add-texts entries).")  # fmt: skip
@click.option("--under", multiple=True, type=click.Path(path_type=bytes),
              help="Only images under this folder (repeatable: any of them).")  # fmt: skip
@click.option("--after", type=DateParam(), help="Only photos taken on or after DATE (ISO 8601).")
@click.option("--before", type=DateParam(), help="Only photos taken before DATE (ISO 8601).")
@click.option("--min-score", type=float, default=None, help="Only results scoring at least S.")
@click.option("--captioned/--uncaptioned", default=None, help="Only images with (without) a caption.")
@click.option("--words", multiple=True,
              help="Only items whose text, caption or file name match (FTS5; repeatable).")  # fmt: skip
@click.option("--by", type=click.Choice(["meaning", "words", "both"]), default=None,
              help="Rank by meaning, words (BM25) or both (RRF; default where text is read).")  # fmt: skip
@click.option("--media", type=click.Choice(["all", "photos", "videos"]), default="all", show_default=True,
              help="Photos, moments of videos, or both.")  # fmt: skip
@click.option("--per-video", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N moments of each video (1: each video at its best moment).")  # fmt: skip
@hit_output_options
@click.option("--device", default="auto", show_default=True,
              help="Model device: auto, cpu, cuda or mps (auto: $CLIPDEX_DEVICE if set).")  # fmt: skip
@runtime_option
@pass_state
def search(state, text, images, not_texts, not_images, k, target, under, after, before, min_score,
           captioned, words, by, media, per_video, as_json, paths, null, device, runtime):  # fmt: skip
    """Search by TEXT and/or --image: the best matching images (or --target texts).

    Terms combine: the query is the normalised sum of TEXT's and each --image's vector minus
    each --not's and --not-image's. Filters keep the best k among the images that match.
    Dates are the photo's EXIF date (else its file's mtime); --after is inclusive, --before
    exclusive, a date alone is local midnight. --words keeps only items whose text (read in the
    picture by `index --ocr`, a caption, the file name) matches; alone, it is also the query.

    \b
    Examples:
      clipdex search a red bicycle
      clipdex search "sunset over the sea" -k 20 --json
      clipdex search --image query.jpg --paths | xargs open
      clipdex search --image query.jpg --target texts     # image -> captions
      clipdex search "beach at sunset" --image ref.jpg --not people --not-image crowd.jpg
      clipdex search dog --under ~/Pictures/2024 --after 2024-06-01 --before 2024-07-01
      clipdex search --words "INVOICE 4471"             # the pictures with those words in them
      clipdex search receipt --words 北京 --by both
      clipdex search "a dog jumping into a lake" --media videos --per-video 1
    """
    from clipdex.index.filters import Filter

    query = " ".join(text).strip()
    if not query and not images and words:  # the words alone: they are the query too
        query, by = " ".join(words), by or "words"
    if by == "words" and not query:
        raise click.UsageError("--by words ranks by the words of TEXT: give a TEXT")
    if not query and not images:
        if not_texts or not_images:
            raise click.UsageError("negative terms need a TEXT or --image to steer from")
        raise click.UsageError("give a TEXT query or --image PATH")
    if any(not t.strip() for t in not_texts):
        raise click.UsageError("--not needs a non-empty text")
    if k < 1:
        raise click.UsageError("-k must be at least 1")
    check_output_mode(as_json, paths, null)
    if captioned is not None and target == "texts":
        raise click.UsageError("--captioned/--uncaptioned apply to image searches")
    filt = Filter(under=list(under), after=after, before=before, captioned=captioned, min_score=min_score,
                  words=list(words), media=media)  # fmt: skip
    with state.open(device=device, runtime=runtime) as lib:  # one query: the FAISS index stays on the CPU
        results = lib.search(
            text=query or None, image=list(images), not_text=list(not_texts), not_image=list(not_images),
            k=k, target=target, filter=filt, by=by, per_video=per_video,
        )  # fmt: skip
    print_hits(results, as_json, paths, null)


@click.command("add-texts")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--column", default=None, help="Column holding the text in .csv/.tsv/.jsonl (default: text).")
@model_options
@runtime_option
@json_option
@quiet_option
@pass_state
def add_texts(state, file, column, model, pretrained, device, runtime, as_json, quiet):
    """Add texts from FILE (.txt one per line, or .csv/.tsv/.jsonl with --column).

    A text already in the library (exact content) is not added again: re-running is safe.

    \b
    Examples:
      clipdex add-texts labels.txt
      clipdex add-texts products.csv --column title --json
      clipdex search --image photo.jpg --target texts
    """
    from clipdex.library import read_texts

    texts = read_texts(file, column)
    lib = state.open(create=True, model=model, pretrained=pretrained, device=device, runtime=runtime)
    with lib:
        ids = lib.add_texts(texts)
    unchanged = len(texts) - len(ids)  # already stored, or a repeated line
    if as_json:
        emit_json({"added": len(ids), "unchanged": unchanged})
    info(f"{len(ids)} texts added, {unchanged} unchanged", quiet or as_json)


@click.command("import-embeddings")
@click.argument("vectors", type=click.Path(exists=True))
@click.argument("metadata", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--modality", type=click.Choice(["image", "text"]), default=None,
    help="What the rows are (default: image if METADATA has a path column, else text).",
)  # fmt: skip
@model_options
@index_type_option
@click.option(
    "--ray", "ray_address", default=None, is_flag=False, flag_value="local", metavar="[ADDRESS]",
    help="Large-library mode: fill the index's blocks in Ray tasks (alone: $RAY_ADDRESS or a local "
    "cluster; or auto / an ADDRESS).",
)  # fmt: skip
@json_option
@quiet_option
@pass_state
def import_embeddings(
    state, vectors, metadata, modality, model, pretrained, device, index_type, ray_address, as_json, quiet
):
    """Import embeddings computed elsewhere: VECTORS.npy (N, D) with METADATA (N rows), or a SHARD_DIR.

    METADATA is a .csv, .jsonl or .parquet file with a `path` (or `image_path`) column for images
    or a `text` (or `caption`) column for texts; row i describes vector i. Vectors are
    L2-normalised; D must match the library's model (a new library records --model, or the default).
    Relative image paths resolve against METADATA's folder; `index` never removes imported items.
    Re-running is safe: a known path (or text) is unchanged, or updated when its vector differs.

    A SHARD_DIR (the output of `clipdex embed`, or of clip-retrieval) is imported shard by shard:
    img_emb/*.npy with metadata/*.parquet, and text_emb/*.npy when present. A new library takes
    the model recorded in the folder's manifest.json unless --model is given.

    Large-library mode (--index-type ivf-pq-ondisk, or automatically when the float32 vectors would
    exceed the memory budget): the .npy files are hard-linked (or copied as float16) into
    LIBRARY/vectors/ and stay the vectors' storage; scores are cosines of the float16 vectors.

    \b
    Examples:
      clipdex import-embeddings img_emb/img_emb_0.npy metadata/metadata_0.parquet
      clipdex import-embeddings vecs.npy paths.csv --model ViT-B-32 --json
      clipdex import-embeddings text_vecs.npy captions.jsonl --modality text
      clipdex import-embeddings embeddings/            # a SHARD_DIR
    """
    import os

    shard_dir = os.path.isdir(vectors)
    if shard_dir and (metadata is not None or modality is not None):
        raise click.UsageError("a SHARD_DIR takes no METADATA and no --modality")
    if not shard_dir and metadata is None:
        raise click.UsageError("give METADATA with VECTORS.npy (or a SHARD_DIR alone)")
    if shard_dir and model is None and pretrained is None:
        from clipdex.library import shard_model

        model, pretrained = shard_model(vectors) or (None, None)
    lib = state.open(create=True, model=model, pretrained=pretrained, device=device)
    with lib, progress_bar("importing", quiet) as bar:
        c = lib.import_embeddings(
            vectors, metadata, modality=modality, progress=bar, index_type=index_type, ray=ray_address
        )
    if as_json:
        emit_json(c.to_dict())
    missing = f"; {c.missing_files} paths do not exist on this machine" if c.missing_files else ""
    info(
        f"{c.imported} embeddings imported, {c.updated} updated, {c.unchanged} unchanged{missing}",
        quiet or as_json,
    )


@click.command("info")
@json_option
@pass_state
def info_cmd(state, as_json):
    """Show the library's model, counts, indexes and size on disk."""
    with state.open() as lib:
        data = lib.info()
    if as_json:
        emit_json(data)
        return
    click.echo(f"library:   {data['library']}")
    model = data["model"] or "(none yet)"
    click.echo(f"model:     {model}" + (f" ({data['pretrained']})" if data["pretrained"] else ""))
    click.echo(f"dimension: {data['dim']}")
    click.echo(f"images:    {data['images']}")
    click.echo(f"texts:     {data['texts']}")
    click.echo(f"failed:    {data['failed_files']} files that did not decode (retried once changed, "
               "or with `index --retry-failed`)")  # fmt: skip
    for kind, idx in data["indexes"].items():
        extra = ", ".join(f"{k}={v}" for k, v in idx.items() if k not in ("type", "ntotal", "files"))
        click.echo(
            f"index:     {kind}: {idx.get('type')} ({idx['ntotal']} vectors{', ' + extra if extra else ''})"
        )
    if data["mode"] != "normal":
        vf = data["vector_files"]
        click.echo(f"mode:      {data['mode']} ({vf['count']} vector files, {human_size(vf['bytes'])})")
    click.echo(f"on disk:   {human_size(data['bytes_on_disk'])}")
    click.echo(f"runtime:   {data['runtime']} (query encoding); vectors: {data['precision']}")


@click.command("check")
@click.option(
    "--repair", is_flag=True, help="Rebuild derived files, remove leftovers, upgrade an old schema."
)
@json_option
@pass_state
@click.pass_context
def check_cmd(ctx, state, repair, as_json):
    """Check the library's consistency; exit 0 only when it is healthy.

    Checks SQLite's integrity, FAISS ids against the database, every vector (finite, unit norm),
    orphan captions, leftover temporary files and the schema version. --repair never removes user
    data: it rebuilds the FAISS files, removes leftovers and upgrades the schema.

    \b
    Examples:
      clipdex check
      clipdex check --repair --json
    """
    with state.open() as lib:
        report = lib.check(repair=repair)
    if as_json:
        emit_json(report)
    else:
        for line in report["repaired"]:
            click.echo(f"repaired: {line}")
        for p in report["problems"]:
            click.echo(f"{p['kind']}: {p['detail']}")
        hint = "" if repair else " (`clipdex check --repair` fixes what it can)"
        info("library is healthy" if report["healthy"] else f"{len(report['problems'])} problems{hint}")
    if not report["healthy"]:
        ctx.exit(1)


COMMANDS = [index, search, add_texts, import_embeddings, info_cmd, check_cmd]
