"""`clipdex embed --ray`: the same job as a Ray Data pipeline.

Rows are the job's files (a video: a row per kept frame, streamed out of its decode task in
batches, merged into spans by the driver's builder); decoding (``load_entry``: `index`'s
``open_image`` + the model's preprocess; ``VideoLoad`` for a video) runs in CPU tasks,
encoding (``encode_image_batch``) in a pool of actors that each load the model once: one per GPU
(``num_gpus=1``), else N CPU actors. Actors are restarted and their batch retried when they die
(``max_restarts``/``max_task_retries``). The driver collects each shard's rows and writes the
shard once, atomically (so the output folder must be reachable from the driver: a local disk or
a mounted shared one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.retrieval.video import DEFAULT_INTERVAL
from clipdex.scale.load import Loaded

if TYPE_CHECKING:
    from clipdex.retrieval.models import LoadedModel
    from clipdex.scale.job import EmbedJob, Shard

# Fault injection for the test suite: the encoder actor that manages to delete this file dies
# (hard, mid-run) on its next batch, once for the whole job.
FAULT_ENV = "CLIPDEX_EMBED_FAULT_FILE"
# Logical memory reserved by a decode task: a worker with torch loaded, a decoded photo, a batch.
DECODE_MEMORY = 2**30


_FIELDS = ("shard", "pos", "frame", "t", "count", "ok", "error", "size", "mtime", "width", "height",
           "caption", "duration", "end")  # fmt: skip


class _Rows:
    """Decoded rows on their way out of a decode task: a picture, a video frame or a failure each.

    ``frame`` is -1 for a picture (or a failed file), else the frame's number in its video; the
    video's last frame carries ``count`` (frames kept) and the facts of its rows (size, mtime,
    shown width/height, duration, end), the others ``count`` 0."""

    def __init__(self, shape: tuple, limit: int):
        self.shape, self.limit = shape, limit
        self.cols: dict[str, list] = {k: [] for k in _FIELDS}
        self.pixels: list[np.ndarray] = []

    def add(self, shard: int, pos: int, pixels: Any = None, **values: Any) -> None:
        row = {"frame": -1, "t": np.nan, "count": 0, "ok": pixels is not None, "error": "", "size": 0,
               "mtime": np.nan, "width": 0, "height": 0, "caption": None, "duration": np.nan,
               "end": np.nan, **values}  # fmt: skip
        self.cols["shard"].append(shard)
        self.cols["pos"].append(pos)
        for k in _FIELDS[2:]:
            self.cols[k].append(row[k])
        self.pixels.append(np.zeros(self.shape, np.float32) if pixels is None else np.asarray(pixels))

    @property
    def full(self) -> bool:
        return len(self.pixels) >= self.limit

    def take(self) -> dict:
        out = {
            k: np.asarray(v, dtype=object if k in ("error", "caption") else None)
            for k, v in self.cols.items()
        }
        out["pixels"] = np.stack(self.pixels).astype(np.float32, copy=False)
        self.cols = {k: [] for k in _FIELDS}
        self.pixels = []
        return out


def decode_batch(
    batch: dict[str, np.ndarray], preprocess: Any, draft_to: Any, shape: tuple,
    interval: float = DEFAULT_INTERVAL,
) -> Iterator[dict]:  # fmt: skip
    """A Ray Data batch of files → batches of preprocessed pixels (zeros where a file failed) and
    metadata: a row per picture, a row per kept frame of a video (see `_Rows`), at most
    ``len(batch)`` rows a batch, so a long video streams through in bounded memory."""
    from clipdex.scale.load import load_entry
    from clipdex.scale.sources import Entry

    n = len(batch["key"])
    rows = _Rows(shape, max(1, n))
    for i in range(n):
        side = str(batch["sidecar"][i]) or None
        entry = Entry(str(batch["key"][i]), side, bool(batch["probe"][i]))
        shard, pos = int(batch["shard"][i]), int(batch["pos"][i])
        if entry.video:
            yield from _video_rows(rows, shard, pos, entry, preprocess, min(shape[1:]), interval)
            continue
        try:
            loaded = load_entry(entry, preprocess, draft_to)
        except Exception as e:  # one bad file never fails the task
            rows.add(shard, pos, error=str(e) or type(e).__name__)
        else:
            rows.add(shard, pos, loaded.pixels.numpy(), size=loaded.size, mtime=loaded.mtime,
                     width=loaded.width, height=loaded.height, caption=loaded.caption)  # fmt: skip
        if rows.full:
            yield rows.take()
    if rows.pixels:
        yield rows.take()


def _video_rows(
    rows: _Rows, shard: int, pos: int, entry: Any, preprocess: Any, short_side: int, interval: float
) -> Iterator[dict]:
    """One video's frame rows into ``rows`` (full batches yielded); its last frame is held back
    until the decode has ended well, so that only a whole video carries a ``count``."""
    from clipdex.scale.load import LoadError
    from clipdex.scale.load_video import VideoLoad

    held = None
    try:
        load = VideoLoad(entry, preprocess, short_side, interval)
        for number, (t, pixels) in enumerate(load.frames()):
            if held is not None:
                rows.add(shard, pos, held[2].numpy(), frame=held[0], t=held[1])
                if rows.full:
                    yield rows.take()
            held = (number, t, pixels)
        f = load.facts()
    except LoadError as e:
        rows.add(shard, pos, error=str(e))
        return
    duration = np.nan if f.duration is None else f.duration
    rows.add(shard, pos, held[2].numpy(), frame=held[0], t=held[1], count=held[0] + 1, size=f.size,
             mtime=f.mtime, width=f.width, height=f.height, duration=duration, end=f.end)  # fmt: skip


class Encoder:
    """An actor holding the model: pixels → unit float32 vectors (zeros for failed rows)."""

    def __init__(self, spec_json: str, device: str, runtime: str | None = None, cache: str | None = None):
        from clipdex.retrieval.encoders import TorchEncoder
        from clipdex.retrieval.models import ModelSpec, load_model
        from clipdex.retrieval.onnx.cache import eval_encoder

        self.lm = load_model(ModelSpec.from_json(spec_json), device)
        # ONNX Runtime where the driver's runtime says so: each node exports the graphs into its
        # own cache once (the pixels from the decode tasks are the same either way).
        enc = eval_encoder(self.lm, runtime, cache=cache)
        self.onnx = None if isinstance(enc, TorchEncoder) else enc
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        import torch

        from clipdex.retrieval.embed import encode_image_batch

        self.calls += 1
        _maybe_die(self.calls)
        ok = np.asarray(batch["ok"], bool)
        vectors = np.zeros((len(ok), self.lm.embed_dim), np.float32)
        if ok.any() and self.onnx is not None:
            vectors[ok] = self.onnx.encode_pixels(np.ascontiguousarray(batch["pixels"][ok]))
        elif ok.any():
            vectors[ok] = encode_image_batch(
                self.lm, torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
            )
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["vector"] = vectors
        return out


def _maybe_die(calls: int) -> None:
    token = os.environ.get(FAULT_ENV)
    if token and calls >= 2:
        try:
            os.unlink(token)
        except FileNotFoundError:
            return
        os._exit(1)


def _listing(todo: list[Shard]) -> Any:
    """The files to embed as one columnar table (compact in the driver, even for millions)."""
    import pyarrow as pa

    entries = [(s.index, pos, e) for s in todo for pos, e in enumerate(s.entries)]
    return pa.table({
        "shard": pa.array([i for i, _, _ in entries], pa.int32()),
        "pos": pa.array([p for _, p, _ in entries], pa.int32()),
        "key": pa.array([e.key for _, _, e in entries], pa.string()),
        "sidecar": pa.array([e.sidecar or "" for _, _, e in entries], pa.string()),
        "probe": pa.array([e.probe for _, _, e in entries], pa.bool_()),
    })  # fmt: skip


def _collect(job: EmbedJob, builder: Any, batch: dict, i: int, pos: int) -> bool:
    """Row ``i`` of an encoded batch into its shard's builder (a picture, a video frame or a
    failure); True when it finished its file. Rows a retry delivers twice are dropped there."""
    from clipdex.scale.load_video import VideoFacts

    if not batch["ok"][i]:
        error = str(batch["error"][i])
        if not builder.fail(pos, error):
            return False
        job.report_failure(builder.shard.entries[pos], error)
        return True
    facts = (int(batch["size"][i]), float(batch["mtime"][i]), int(batch["width"][i]), int(batch["height"][i]))
    frame = int(batch["frame"][i])
    if frame < 0:
        caption = batch["caption"][i]
        loaded = Loaded(None, *facts, caption if isinstance(caption, str) else None)
        return builder.put(pos, batch["vector"][i], loaded)
    done = builder.put_frame(pos, frame, float(batch["t"][i]), batch["vector"][i])
    if count := int(batch["count"][i]):
        duration = float(batch["duration"][i])
        end = VideoFacts(*facts, None if np.isnan(duration) else duration, float(batch["end"][i]))
        done = builder.end_video(pos, count, end) or done
    return done


def connect(address: str) -> bool:
    """Join or start a cluster; True when this call started Ray (and should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address == "local":  # `--ray` alone: $RAY_ADDRESS if set, else a local cluster
            if os.environ.get("RAY_ADDRESS"):
                ray.init(log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as e:  # ConnectionError and friends: one line for the user
        raise ClipdexError(f"cannot start or join Ray ({address}): {str(e).splitlines()[0]}") from e
    return True


def run_ray(job: EmbedJob, todo: list[Shard], lm: LoadedModel, address: str, actors: int | None,
            runtime: str | None = None) -> None:  # fmt: skip
    """Embed ``todo`` shards on a Ray cluster; the driver writes each shard when its rows are in."""
    import ray
    import ray.data

    from clipdex.retrieval.onnx.cache import cache_dir
    from clipdex.scale.builder import ShardBuilder

    started = connect(address)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            size, actor_args, device = actors or gpus, {"num_gpus": 1}, "cuda"
        else:
            size, actor_args, device = (
                actors or max(1, int(resources.get("CPU", 2)) // 2),
                {"num_cpus": 1},
                "cpu",
            )
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        listing = _listing(todo)
        total = listing.num_rows
        step = max(job.batch_size, -(-total // 10_000))  # a batch a block for small jobs, ≤ 10k blocks
        h, w = lm.image_size
        ds = ray.data.from_arrow([listing.slice(i, step) for i in range(0, total, step)])
        ds = ds.map_batches(
            decode_batch, batch_size=job.batch_size, batch_format="numpy", num_cpus=1, memory=DECODE_MEMORY,
            fn_kwargs={"preprocess": lm.preprocess, "draft_to": lm.image_size, "shape": (3, h, w),
                       "interval": job.video_interval},
        )  # fmt: skip
        # Ray Data restarts a dead actor and redoes its batch (max_restarts / max_task_retries
        # default to -1 for actor pools); the decode tasks' memory reservation differing from the
        # actors', Ray keeps decoding in its own tasks instead of fusing it into the actors.
        ds = ds.map_batches(
            Encoder, batch_size=job.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            fn_constructor_kwargs={"spec_json": lm.spec.to_json(), "device": device, "runtime": runtime,
                                   "cache": str(cache_dir())},
            **actor_args,
        )  # fmt: skip
        job.log(f"ray: {size} encoder actor{'s' if size != 1 else ''} on {device}")
        shards = {s.index: s for s in todo}
        builders: dict[int, ShardBuilder] = {}
        written: set[int] = set()
        done = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["pos"])):
                index, pos = int(batch["shard"][i]), int(batch["pos"][i])
                if index in written:
                    continue  # never twice, whatever a retry might deliver
                if index not in builders:
                    builders[index] = ShardBuilder(shards[index], lm.embed_dim)
                done += _collect(job, builders[index], batch, i, pos)
                if builders[index].complete:
                    job.finish_shard(builders.pop(index))
                    written.add(index)
            if job.progress:
                job.progress(done, total)
        if builders:  # cannot happen unless Ray lost rows: refuse to claim the job is done
            raise ClipdexError(f"ray returned incomplete shards: {sorted(builders)}")
    finally:
        if started:
            ray.shutdown()
