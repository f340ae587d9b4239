"""An embedding job: plan it (listing → fixed-size shards), resume it, run it in-process.

The in-process run uses `index`'s pipeline pieces: ``load_entry`` (``open_image`` + the model's
preprocess) in ``ordered_prefetch`` threads, ``encode_image_batch`` in batches; a video is decoded
in order, a frame at a time (``VideoLoad`` in a background thread), its frames joining the same
batches. The Ray run (``ray_job``) runs the same per-file and per-batch functions on a cluster.
Either way the driver collects each shard's rows in a ``ShardBuilder`` (which merges a video's
frames into spans as `index` does) and writes the shard once, atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.inputs.paths import display_path
from clipdex.retrieval.models import ModelSpec
from clipdex.retrieval.video import DEFAULT_INTERVAL
from clipdex.scale.builder import ShardBuilder
from clipdex.scale.load import Loaded, LoadError
from clipdex.scale.shards import FORMAT, ShardDir, digest
from clipdex.scale.sources import Entry

Problem = Callable[[str, str], None]
Progress = Callable[[int, int], None]


@dataclass
class EmbedStats:
    """What one `embed` run did (``--json`` prints ``to_dict()``)."""

    files: int = 0  # input files of the whole job
    embedded: int = 0  # rows in all shards (a picture or a video's span each)
    frames: int = 0  # of those, video spans
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
        videos: bool = True,
        video_interval: float = DEFAULT_INTERVAL,
        video_progress: Progress | None = None,
    ):
        if shard_size < 1 or batch_size < 1:
            raise ValueError("shard_size and batch_size must be at least 1")
        if not video_interval > 0:
            raise ValueError("the video interval must be above 0 seconds")
        self.videos, self.video_interval = videos, float(video_interval)
        self.video_progress = video_progress  # (seconds decoded, seconds in the video)
        self.sources, self.out, self.spec = list(sources), ShardDir(out), spec
        self.shard_size, self.batch_size, self.workers = shard_size, batch_size, workers
        self.problem = problem or (lambda path, reason: None)
        self.progress, self.log = progress, log or (lambda msg: None)
        self.on_shard = on_shard  # called after each shard is written (tests interrupt here)
        self.stats = EmbedStats()
        self.shards: list[Shard] = []
        self.dim: int | None = None  # known before loading the model when resuming
        self._counts: dict[int, tuple[int, int, int]] = {}  # shard -> (embedded, failed, frames)

    # ---- planning and resuming ------------------------------------------------------------
    def prepare(self) -> list[Shard]:
        """List the inputs, check the output folder, drop stale shard files; returns shards to do."""
        from clipdex.scale import require_pyarrow
        from clipdex.scale.sources import list_sources

        require_pyarrow()
        root = self.out.root
        if root.exists() and not root.is_dir():
            raise ClipdexError(f"--out {root} exists and is not a folder")
        entries = list_sources(self.sources, exclude=[root], videos=self.videos)
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
            if (interval := manifest.get("video_interval", DEFAULT_INTERVAL)) != self.video_interval:
                raise ClipdexError(
                    f"{root} was written with --video-interval {interval}; use the same or a new --out"
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
            embedded, failed, frames = self._counts.get(s.index, (None, None, None))
            shards.append({"index": s.index, "files": len(s.entries), "digest": s.digest,
                           "embedded": embedded, "failed": failed, "frames": frames})  # fmt: skip
        self.out.write_manifest({
            "format": FORMAT, "model": asdict(self.spec), "dim": dim, "dtype": "float16",
            "shard_size": self.shard_size, "video_interval": self.video_interval, "complete": complete,
            "counts": {"files": self.stats.files, "embedded": self.stats.embedded,
                       "failed": self.stats.failed, "frames": self.stats.frames, "shards": len(self.shards)},
            "shards": shards,
        })  # fmt: skip

    def finish_shard(self, builder: ShardBuilder) -> None:
        embedded, failed, frames = builder.write(self.out)
        self._counts[builder.shard.index] = (embedded, failed, frames)
        self.stats.shards_written += 1
        name = f"shard {builder.shard.index + 1}/{len(self.shards)}"
        self.log(f"{name} written: {embedded} embedded, {failed} failed")
        if self.on_shard:
            self.on_shard(builder.shard.index)

    def report_failure(self, entry: Entry, reason: str) -> None:
        self.problem(display_path(entry.key), reason)

    def total_counts(self) -> None:
        self.stats.embedded = sum(e for e, _, _ in self._counts.values())
        self.stats.failed = sum(f for _, f, _ in self._counts.values())
        self.stats.frames = sum(v for _, _, v in self._counts.values())

    # ---- running in-process ---------------------------------------------------------------
    def run_local(self, todo: list[Shard], lm, encoder=None) -> None:  # noqa: ANN001
        """Embed ``todo`` shards in this process with `index`'s decode/encode pipeline, encoding
        with ``encoder`` (an `OnnxEncoder`, or None: the model's own torch)."""
        from clipdex.retrieval.encoders import TorchEncoder
        from clipdex.retrieval.prefetch import default_workers, ordered_prefetch
        from clipdex.scale.load import load_entry

        onnx = encoder if encoder is not None and not isinstance(encoder, TorchEncoder) else None
        run = _LocalRun(self, todo, lm, onnx)
        preprocess = onnx.preprocess if onnx is not None else lm.preprocess

        def decode(item: tuple[int, int, Entry]) -> Loaded | None:
            # A video is decoded below, in order and a frame at a time: never whole, ahead.
            return None if item[2].video else load_entry(item[2], preprocess, lm.image_size)

        items = ((s.index, pos, e) for s in todo for pos, e in enumerate(s.entries))
        workers = self.workers or default_workers()
        for (index, pos, entry), result in ordered_prefetch(
            decode, items, workers, ahead=self.batch_size * 2
        ):
            if isinstance(result, BaseException):
                run.fail(index, pos, entry, str(result) or type(result).__name__)
            elif result is None:
                run.video(index, pos, entry, preprocess)
            else:
                run.add(index, pos, -1, result)
            run.next_file()
        run.encode()
        run.flush_complete()


class _LocalRun:
    """The in-process run's batch and builders (at most two or three live at once)."""

    def __init__(self, job: EmbedJob, todo: list[Shard], lm, onnx):  # noqa: ANN001
        self.job, self.lm, self.onnx = job, lm, onnx
        self.shards = {s.index: s for s in todo}
        self.total = sum(len(s.entries) for s in todo)
        self.done = 0
        self.builders: dict[int, ShardBuilder] = {}
        self.batch: list[tuple[int, int, int, float, object]] = []  # shard, pos, frame (-1), t, input

    def builder(self, index: int) -> ShardBuilder:
        if index not in self.builders:  # made in listing order, so shards are written in order
            self.builders[index] = ShardBuilder(self.shards[index], self.lm.embed_dim)
        return self.builders[index]

    def add(self, index: int, pos: int, frame: int, item: object, t: float = 0.0) -> None:
        self.builder(index)
        self.batch.append((index, pos, frame, t, item))
        if len(self.batch) >= self.job.batch_size:
            self.encode()

    def encode(self) -> None:
        if not self.batch:
            return
        import torch

        from clipdex.retrieval.embed import encode_image_batch

        pixels = [x.pixels if frame < 0 else x for _, _, frame, _, x in self.batch]
        if self.onnx is not None:
            vecs = self.onnx.encode_pixels(np.stack(pixels))
        else:
            vecs = encode_image_batch(self.lm, torch.stack(pixels))
        for (index, pos, frame, t, x), vec in zip(self.batch, vecs):
            if frame < 0:
                x.pixels = None
                self.builder(index).put(pos, vec, x)
            else:
                self.builder(index).put_frame(pos, frame, t, vec)
        self.batch.clear()

    def video(self, index: int, pos: int, entry: Entry, preprocess) -> None:  # noqa: ANN001
        """Stream one video's frames into the batches; its end (or failure) to its builder."""
        from clipdex.retrieval.prefetch import background
        from clipdex.retrieval.video import FRAMES_AHEAD
        from clipdex.scale.load_video import VideoLoad

        job, count = self.job, 0
        follow = None
        if job.video_progress is not None:
            follow = lambda t, dur: job.video_progress(int(t), int(dur))  # noqa: E731
        try:
            load = VideoLoad(entry, preprocess, min(self.lm.image_size), job.video_interval, follow)
            for t, pixels in background(load.frames(), FRAMES_AHEAD, "clipdex-video-decode"):
                self.add(index, pos, count, pixels, t)
                count += 1
            self.builder(index).end_video(pos, count, load.facts())
        except LoadError as e:
            self.batch[:] = [x for x in self.batch if (x[0], x[1]) != (index, pos)]
            self.fail(index, pos, entry, str(e))

    def fail(self, index: int, pos: int, entry: Entry, reason: str) -> None:
        if self.builder(index).fail(pos, reason):
            self.job.report_failure(entry, reason)

    def next_file(self) -> None:
        self.done += 1
        self.flush_complete()
        if self.job.progress:
            self.job.progress(self.done, self.total)

    def flush_complete(self) -> None:
        for index in sorted(i for i, b in self.builders.items() if b.complete):
            self.job.finish_shard(self.builders.pop(index))


def _counts_on_disk(out: ShardDir, index: int) -> tuple[int, int, int]:
    """(embedded, failed, frames) of a finished shard (no ``t`` column: written before videos)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(out.metadata(index))
    frames = 0
    if "t" in meta.schema_arrow.names:
        frames = meta.metadata.num_rows - meta.read(columns=["t"]).column("t").null_count
    return meta.metadata.num_rows, pq.read_metadata(out.failed(index)).num_rows, frames
