"""`clipdex embed --ray`: the same job as a Ray Data pipeline.

Rows are the job's files; decoding (``load_entry``: `index`'s ``open_image`` + the model's
preprocess) runs in CPU tasks, encoding (``encode_image_batch``) in a pool of actors that each
load the model once: one per GPU (``num_gpus=1``), else N CPU actors. Actors are restarted and
their batch retried when they die (``max_restarts``/``max_task_retries``). The driver collects
each shard's rows and writes the shard once, atomically (so the output folder must be reachable
from the driver: a local disk or a mounted shared one).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from clipdex.errors import ClipdexError
from clipdex.scale.load import Loaded

if TYPE_CHECKING:
    from clipdex.retrieval.models import LoadedModel
    from clipdex.scale.job import EmbedJob, Shard

# Fault injection for the test suite: the encoder actor that manages to delete this file dies
# (hard, mid-run) on its next batch, once for the whole job.
FAULT_ENV = "CLIPDEX_EMBED_FAULT_FILE"
# Logical memory reserved by a decode task: a worker with torch loaded, a decoded photo, a batch.
DECODE_MEMORY = 2**30


def decode_batch(batch: dict[str, np.ndarray], preprocess: Any, draft_to: Any, shape: tuple) -> dict:
    """A Ray Data batch of files → preprocessed pixels (zeros where a file failed) and metadata."""
    from clipdex.scale.load import load_entry
    from clipdex.scale.sources import Entry

    n = len(batch["key"])
    pixels = np.zeros((n, *shape), np.float32)
    out: dict[str, list] = {k: [] for k in ("ok", "error", "size", "mtime", "width", "height", "caption")}
    for i in range(n):
        side = str(batch["sidecar"][i]) or None
        entry = Entry(str(batch["key"][i]), side, bool(batch["probe"][i]))
        try:
            loaded = load_entry(entry, preprocess, draft_to)
        except Exception as e:  # one bad file never fails the task
            for k, v in (("ok", False), ("error", str(e) or type(e).__name__), ("size", 0),
                         ("mtime", np.nan), ("width", 0), ("height", 0), ("caption", None)):  # fmt: skip
                out[k].append(v)
            continue
        pixels[i] = loaded.pixels.numpy()
        good = (("ok", True), ("error", ""), ("size", loaded.size), ("mtime", loaded.mtime),
                ("width", loaded.width), ("height", loaded.height), ("caption", loaded.caption))  # fmt: skip
        for k, v in good:
            out[k].append(v)
    result = {"shard": batch["shard"], "pos": batch["pos"], "pixels": pixels}
    result.update(
        {k: np.asarray(v, dtype=object if k in ("error", "caption") else None) for k, v in out.items()}
    )
    return result


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


def _collect(job: EmbedJob, builder: Any, batch: dict, i: int, pos: int) -> None:
    """Row ``i`` of an encoded batch into its shard's builder (a vector and metadata, or a failure)."""
    if batch["ok"][i]:
        loaded = Loaded(
            None, int(batch["size"][i]), float(batch["mtime"][i]), int(batch["width"][i]),
            int(batch["height"][i]), caption if isinstance(caption := batch["caption"][i], str) else None,
        )  # fmt: skip
        builder.put(pos, batch["vector"][i], loaded)
    else:
        error = str(batch["error"][i])
        builder.fail(pos, error)
        job.report_failure(builder.shard.entries[pos], error)


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
    from clipdex.scale.job import ShardBuilder

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
            fn_kwargs={"preprocess": lm.preprocess, "draft_to": lm.image_size, "shape": (3, h, w)},
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
                if index in written or (index in builders and pos in builders[index].rows):
                    continue  # never twice, whatever a retry might deliver
                if index not in builders:
                    builders[index] = ShardBuilder(shards[index], lm.embed_dim)
                _collect(job, builders[index], batch, i, pos)
                done += 1
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
