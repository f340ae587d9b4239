"""An embedding job: plan it (listing → fixed-size shards), resume it, run it in-process.

The in-process run uses `index`'s pipeline pieces: ``load_entry`` (``open_image`` + the model's
preprocess) in ``ordered_prefetch`` threads, ``encode_image_batch`` in batches. The Ray run
(``ray_job``) runs the same per-file and per-batch functions on a cluster. Either way the driver
collects each shard's rows in a ``ShardBuilder`` and writes the shard once, atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.inputs.paths import display_path
from clipdex.retrieval.models import ModelSpec
from clipdex.scale.load import Loaded
from clipdex.scale.shards import FORMAT, ShardDir, digest
from clipdex.scale.sources import Entry

Problem = Callable[[str, str], None]
Progress = Callable[[int, int], None]


@dataclass
class EmbedStats:
    """What one `embed` run did (``--json`` prints ``to_dict()``)."""

    files: int = 0  # input files of the whole job
    embedded: int = 0  # rows in all shards
    failed: int = 0  # files in failed/ of all shards
    shards: int = 0
    shards_written: int = 0  # by this run
    shards_skipped: int = 0  # finished by an earlier run (resume)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Shard:
    index: int
    entries: list[Entry]
    digest: str = ""

    def __post_init__(self) -> None:
        self.digest = self.digest or digest([e.key for e in self.entries])


def plan_shards(entries: list[Entry], shard_size: int) -> list[Shard]:
    """Consecutive slices of the sorted listing: the same inputs always give the same shards."""
    return [Shard(i, entries[s : s + shard_size]) for i, s in enumerate(range(0, len(entries), shard_size))]


@dataclass
class ShardBuilder:
    """Collects one shard's rows (in any order, each position once) until it is complete."""

    shard: Shard
    dim: int
    vectors: np.ndarray = field(init=False)
    rows: dict[int, Loaded | str] = field(default_factory=dict)  # position -> metadata or error

    def __post_init__(self) -> None:
        self.vectors = np.zeros((len(self.shard.entries), self.dim), np.float32)

    def put(self, pos: int, vector: np.ndarray, loaded: Loaded) -> None:
        self.vectors[pos] = vector
        self.rows[pos] = loaded

    def fail(self, pos: int, error: str) -> None:
        self.rows[pos] = error

    @property
    def complete(self) -> bool:
        return len(self.rows) == len(self.shard.entries)

    def write(self, out: ShardDir) -> tuple[int, int]:
        """Write the shard (embedded rows in listing order); returns (embedded, failed)."""
        ok = [p for p in range(len(self.shard.entries)) if isinstance(self.rows[p], Loaded)]
        meta: dict[str, list] = {k: [] for k in ("path", "size", "mtime", "width", "height", "caption")}
        for p in ok:
            row = self.rows[p]
            meta["path"].append(self.shard.entries[p].key)
            meta["size"].append(row.size)
            meta["mtime"].append(row.mtime)
            meta["width"].append(row.width)
            meta["height"].append(row.height)
            meta["caption"].append(row.caption)
        failed = [
            (display_path(self.shard.entries[p].key), self.rows[p])
            for p in range(len(self.shard.entries))
            if not isinstance(self.rows[p], Loaded)
        ]
        out.write_shard(self.shard.index, self.vectors[ok], meta, failed)
        return len(ok), len(failed)


class EmbedJob:
    """One `clipdex embed` job: sources, output folder, model, shard size."""

    def __init__(
        self,
        sources: Sequence[str | bytes],
        out: str | os.PathLike,
        spec: ModelSpec,
        *,
        shard_size: int = 100_000,
        batch_size: int = 32,
        workers: int | None = None,
        problem: Problem | None = None,
        progress: Progress | None = None,
        log: Callable[[str], None] | None = None,
        on_shard: Callable[[int], None] | None = None,
    ):
        if shard_size < 1 or batch_size < 1:
            raise ValueError("shard_size and batch_size must be at least 1")
        self.sources, self.out, self.spec = list(sources), ShardDir(out), spec
        self.shard_size, self.batch_size, self.workers = shard_size, batch_size, workers
        self.problem = problem or (lambda path, reason: None)
        self.progress, self.log = progress, log or (lambda msg: None)
        self.on_shard = on_shard  # called after each shard is written (tests interrupt here)
        self.stats = EmbedStats()
        self.shards: list[Shard] = []
        self.dim: int | None = None  # known before loading the model when resuming
        self._counts: dict[int, tuple[int, int]] = {}

    # ---- planning and resuming ------------------------------------------------------------
    def prepare(self) -> list[Shard]:
        """List the inputs, check the output folder, drop stale shard files; returns shards to do."""
        from clipdex.scale import require_pyarrow
        from clipdex.scale.sources import list_sources

        require_pyarrow()
        root = self.out.root
        if root.exists() and not root.is_dir():
            raise ClipdexError(f"--out {root} exists and is not a folder")
        entries = list_sources(self.sources, exclude=[root])
        self.shards = plan_shards(entries, self.shard_size)
        self.stats.files, self.stats.shards = len(entries), len(self.shards)
        manifest = self.out.read_manifest()
        if manifest is None and root.is_dir() and any(root.iterdir()):
            raise ClipdexError(f"--out {root} is not empty and holds no embed manifest; choose a new folder")
        old: dict[int, dict] = {}
        if manifest is not None:
            if manifest.get("model") != asdict(self.spec):
                raise ClipdexError(
                    f"{root} holds embeddings of model {ModelSpec(**manifest['model'])}, not {self.spec}; "
                    "choose a new --out"
                )
            if manifest.get("shard_size") != self.shard_size:
                raise ClipdexError(
                    f"{root} was written with --shard-size {manifest.get('shard_size')}; "
                    "use the same or a new --out"
                )
            old = {s["index"]: s for s in manifest.get("shards", [])}
            self.dim = manifest.get("dim")
        done = {
            s.index for s in self.shards
            if s.index in old and old[s.index].get("digest") == s.digest and self.out.is_done(s.index)
        }  # fmt: skip
        # Before the new plan is recorded: files of a shard that is not finished under it go, and
        # the temporary files of writes a crash cut short.
        self.out.remove_temporaries()
        for index in self.out.shard_indexes():
            if index not in done:
                self.out.remove_shard(index)
        for index in sorted(done):
            self._counts[index] = _counts_on_disk(self.out, index)
        self.stats.shards_skipped = len(done)
        todo = [s for s in self.shards if s.index not in done]
        return todo

    def write_manifest(self, dim: int | None, complete: bool) -> None:
        shards = []
        for s in self.shards:
            embedded, failed = self._counts.get(s.index, (None, None))
            shards.append({"index": s.index, "files": len(s.entries), "digest": s.digest,
                           "embedded": embedded, "failed": failed})  # fmt: skip
        self.out.write_manifest({
            "format": FORMAT, "model": asdict(self.spec), "dim": dim, "dtype": "float16",
            "shard_size": self.shard_size, "complete": complete,
            "counts": {"files": self.stats.files, "embedded": self.stats.embedded,
                       "failed": self.stats.failed, "shards": len(self.shards)},
            "shards": shards,
        })  # fmt: skip

    def finish_shard(self, builder: ShardBuilder) -> None:
        embedded, failed = builder.write(self.out)
        self._counts[builder.shard.index] = (embedded, failed)
        self.stats.shards_written += 1
        name = f"shard {builder.shard.index + 1}/{len(self.shards)}"
        self.log(f"{name} written: {embedded} embedded, {failed} failed")
        if self.on_shard:
            self.on_shard(builder.shard.index)

    def report_failure(self, entry: Entry, reason: str) -> None:
        self.problem(display_path(entry.key), reason)

    def total_counts(self) -> None:
        self.stats.embedded = sum(e for e, _ in self._counts.values())
        self.stats.failed = sum(f for _, f in self._counts.values())

    # ---- running in-process ---------------------------------------------------------------
    def run_local(self, todo: list[Shard], lm, encoder=None) -> None:
        """Embed ``todo`` shards in this process with `index`'s decode/encode pipeline, encoding
        with ``encoder`` (an `OnnxEncoder`, or None: the model's own torch)."""
        import torch

        from clipdex.retrieval.embed import encode_image_batch
        from clipdex.retrieval.encoders import TorchEncoder
        from clipdex.retrieval.prefetch import default_workers, ordered_prefetch
        from clipdex.scale.load import load_entry

        onnx = encoder if encoder is not None and not isinstance(encoder, TorchEncoder) else None
        preprocess = onnx.preprocess if onnx is not None else lm.preprocess

        draft_to = lm.image_size
        total = sum(len(s.entries) for s in todo)
        done = 0
        shards = {s.index: s for s in todo}
        builders: dict[int, ShardBuilder] = {}  # made on first use: at most two or three live at once
        items = ((s.index, pos, e) for s in todo for pos, e in enumerate(s.entries))
        batch: list[tuple[int, int, Loaded]] = []

        def builder(index: int) -> ShardBuilder:
            if index not in builders:
                builders[index] = ShardBuilder(shards[index], lm.embed_dim)
            return builders[index]

        def encode() -> None:
            pixels = [loaded.pixels for _, _, loaded in batch]
            vecs = (
                onnx.encode_pixels(np.stack(pixels)) if onnx else encode_image_batch(lm, torch.stack(pixels))
            )
            for (index, pos, loaded), vec in zip(batch, vecs):
                loaded.pixels = None
                builder(index).put(pos, vec, loaded)
            batch.clear()

        def flush_complete() -> None:
            for index in sorted(i for i, b in builders.items() if b.complete):
                self.finish_shard(builders.pop(index))

        decode = lambda item: load_entry(item[2], preprocess, draft_to)  # noqa: E731
        workers = self.workers or default_workers()
        for (index, pos, entry), result in ordered_prefetch(
            decode, items, workers, ahead=self.batch_size * 2
        ):
            done += 1
            b = builder(index)  # made in listing order, so shards are written in order
            if isinstance(result, BaseException):
                reason = str(result) or type(result).__name__
                b.fail(pos, reason)
                self.report_failure(entry, reason)
            else:
                batch.append((index, pos, result))
            if len(batch) >= self.batch_size:
                encode()
            flush_complete()
            if self.progress:
                self.progress(done, total)
        if batch:
            encode()
        flush_complete()


def _counts_on_disk(out: ShardDir, index: int) -> tuple[int, int]:
    import pyarrow.parquet as pq

    return pq.read_metadata(out.metadata(index)).num_rows, pq.read_metadata(out.failed(index)).num_rows
