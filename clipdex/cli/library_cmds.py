"""Library commands: index, search, add-texts, import-embeddings, info."""

from __future__ import annotations

import click

from clipdex.cli.common import (
    emit_json,
    info,
    json_option,
    model_options,
    pass_state,
    problem,
    progress_bar,
    quiet_option,
)


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=bytes))
@model_options
@click.option(
    "--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per batch."
)
@click.option(
    "--workers", default=None, type=click.IntRange(min=1), help="Decode threads (default: CPUs, max 8)."
)
@click.option("--include-hidden", is_flag=True, help="Also index hidden files and folders.")
@click.option("--reembed", is_flag=True, help="Re-embed every item (required to switch the library's model).")
@click.option("--exact-decode", is_flag=True, help="Never decode large JPEGs at reduced scale.")
@click.option(
    "--index-type",
    default=None,
    help="FAISS index: auto (by size and memory; default), flat, ivf-flat, ivf-pq, hnsw, sq8, fp16, binary. "
    "Remembered by the library.",
)
@json_option
@quiet_option
@pass_state
def index(state, folders, model, pretrained, device, batch_size, workers, include_hidden, reembed,
          exact_decode, index_type, as_json, quiet):  # fmt: skip
    """Index image FOLDERS: add new files, re-embed changed ones, drop deleted ones.

    Sidecar captions (photo.jpg + photo.txt) become searchable texts.

    \b
    Examples:
      clipdex index ~/Pictures
      clipdex index ~/Pictures /mnt/archive --json
      clipdex index ~/Pictures --model ViT-B-16 --pretrained laion2b_s34b_b88k --reembed
      clipdex index scans --model local-dir:./my-finetuned-model
    """
    lib = state.open(create=True, model=model, pretrained=pretrained, device=device)
    with lib, progress_bar("indexing", quiet) as bar:
        stats = lib.index(
            list(folders), include_hidden=include_hidden, reembed=reembed, batch_size=batch_size,
            workers=workers, exact_decode=exact_decode, index_type=index_type, problem=problem, progress=bar,
        )  # fmt: skip
    if as_json:
        emit_json(stats.to_dict())
    s = stats
    info(
        f"{s.added} added, {s.updated} updated, {s.removed} removed, {s.unchanged} unchanged, "
        f"{s.failed} failed; texts: {s.texts_added} added, {s.texts_updated} updated, "
        f"{s.texts_removed} removed",
        quiet or as_json,
    )


@click.command()
@click.argument("text", nargs=-1)
@click.option(
    "--image", "image", type=click.Path(path_type=bytes), help="Query by this image instead of text."
)
@click.option("-k", "k", default=10, show_default=True, type=int, help="Number of results.")
@click.option("--target", type=click.Choice(["images", "texts"]), default="images", show_default=True,
              help="Search stored images, or stored texts (captions and add-texts entries).")  # fmt: skip
@json_option
@click.option("--paths", is_flag=True, help="Print bare absolute image paths, one per line.")
@click.option("-0", "null", is_flag=True, help="Like --paths, separated by NUL.")
@pass_state
def search(state, text, image, k, target, as_json, paths, null):
    """Search by TEXT or by --image: the best matching images (or --target texts).

    \b
    Examples:
      clipdex search a red bicycle
      clipdex search "sunset over the sea" -k 20 --json
      clipdex search --image query.jpg --paths | xargs open
      clipdex search --image query.jpg --target texts     # image -> captions
    """
    query = " ".join(text).strip()
    if not query and image is None:
        raise click.UsageError("give a TEXT query or --image PATH")
    if query and image is not None:
        raise click.UsageError("give either TEXT or --image, not both")
    if k < 1:
        raise click.UsageError("-k must be at least 1")
    if sum([as_json, paths, null]) > 1:
        raise click.UsageError("--json, --paths and -0 are exclusive")
    with state.open() as lib:
        results = lib.search(text=query or None, image=image, k=k, target=target)
    if as_json:
        for r in results:
            emit_json(r.to_dict())
    elif paths or null:
        for r in results:
            if r.path is not None:
                click.echo(r.path, nl=not null)
                if null:
                    click.echo("\0", nl=False)
    else:
        _table(results)


def _table(results) -> None:
    for r in results:
        shown = r.path if r.modality == "image" else f"{r.text!r}" + (f"  [{r.path}]" if r.path else "")
        click.echo(f"{r.rank:>3}  {r.score:7.4f}  {shown}")


@click.command("add-texts")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--column", default=None, help="Column holding the text in .csv/.tsv/.jsonl (default: text).")
@model_options
@json_option
@quiet_option
@pass_state
def add_texts(state, file, column, model, pretrained, device, as_json, quiet):
    """Add texts from FILE (.txt one per line, or .csv/.tsv/.jsonl with --column).

    \b
    Examples:
      clipdex add-texts labels.txt
      clipdex add-texts products.csv --column title --json
      clipdex search --image photo.jpg --target texts
    """
    from clipdex.textfiles import read_texts

    texts = read_texts(file, column)
    lib = state.open(create=True, model=model, pretrained=pretrained, device=device)
    with lib:
        ids = lib.add_texts(texts)
    if as_json:
        emit_json({"added": len(ids)})
    info(f"{len(ids)} texts added", quiet or as_json)


@click.command("import-embeddings")
@click.argument("vectors", type=click.Path(exists=True, dir_okay=False))
@click.argument("metadata", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--modality", type=click.Choice(["image", "text"]), default=None,
    help="What the rows are (default: image if METADATA has a path column, else text).",
)  # fmt: skip
@model_options
@json_option
@quiet_option
@pass_state
def import_embeddings(state, vectors, metadata, modality, model, pretrained, device, as_json, quiet):
    """Import embeddings computed elsewhere: VECTORS.npy (N, D) with METADATA (N rows).

    METADATA is a .csv, .jsonl or .parquet file with a `path` (or `image_path`) column for images
    or a `text` (or `caption`) column for texts; row i describes vector i. Vectors are
    L2-normalised; D must match the library's model (a new library records --model, or the default).
    Image paths are stored made absolute; `index` never removes imported items.

    \b
    Examples:
      clipdex import-embeddings img_emb/img_emb_0.npy metadata/metadata_0.parquet
      clipdex import-embeddings vecs.npy paths.csv --model ViT-B-32 --json
      clipdex import-embeddings text_vecs.npy captions.jsonl --modality text
    """
    lib = state.open(create=True, model=model, pretrained=pretrained, device=device)
    with lib, progress_bar("importing", quiet) as bar:
        n = lib.import_embeddings(vectors, metadata, modality=modality, progress=bar)
    if as_json:
        emit_json({"imported": n})
    info(f"{n} embeddings imported", quiet or as_json)


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
    for kind, idx in data["indexes"].items():
        extra = ", ".join(f"{k}={v}" for k, v in idx.items() if k not in ("type", "ntotal"))
        click.echo(
            f"index:     {kind}: {idx.get('type')} ({idx['ntotal']} vectors{', ' + extra if extra else ''})"
        )
    click.echo(f"on disk:   {_size(data['bytes_on_disk'])}")


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


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


COMMANDS = [index, search, add_texts, import_embeddings, info_cmd, check_cmd]
