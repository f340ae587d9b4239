"""`clipdex embed`: one job (`clipdex.scale.job`) run in-process or on Ray (`clipdex.scale.ray_job`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from clipdex.scale.job import EmbedJob, EmbedStats, Problem, Progress


def run_embed(
    sources: Sequence[str | bytes],
    out: str | os.PathLike,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    ray: str | None = None,
    actors: int | None = None,
    shard_size: int = 100_000,
    batch_size: int = 32,
    device: str = "auto",
    workers: int | None = None,
    problem: Problem | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    on_shard: Callable[[int], None] | None = None,
    runtime: str | None = None,
    videos: bool = True,
    video_interval: float = 2.0,
    video_progress: Progress | None = None,
) -> EmbedStats:
    """Embed the image and video files of ``sources`` into shards under ``out``; resumes a
    finished part. A video gives a row per span (``video_interval`` s between kept frames, alike
    frames merged as `index` merges them); ``videos=False`` leaves videos out.

    ``ray``: None runs in-process; ``"local"`` starts a local Ray cluster (or joins
    ``$RAY_ADDRESS``); ``"auto"`` or an address joins that cluster. ``runtime`` (auto, onnx,
    torch) encodes as `clipdex.retrieval.onnx.cache.eval_encoder` chooses, on each Ray node too.
    """
    from clipdex.retrieval.models import load_model, resolve_spec

    spec = resolve_spec(model, pretrained)
    if ray is not None:
        from clipdex.scale import require_ray

        require_ray()
    job = EmbedJob(
        sources, out, spec, shard_size=shard_size, batch_size=batch_size, workers=workers,
        problem=problem, progress=progress, log=log, on_shard=on_shard, videos=videos,
        video_interval=video_interval, video_progress=video_progress,
    )  # fmt: skip
    todo = job.prepare()
    dim = job.dim
    if todo or dim is None:
        # The driver's model gives the dimension and the preprocess; Ray's actors load their own.
        lm = load_model(spec, "cpu" if ray is not None else device)
        dim = lm.embed_dim
        job.write_manifest(dim, complete=False)
        if todo and ray is None:
            from clipdex.retrieval.onnx.cache import eval_encoder

            job.run_local(todo, lm, eval_encoder(lm, runtime, log))
        elif todo:
            from clipdex.scale.ray_job import run_ray

            run_ray(job, todo, lm, address=ray, actors=actors, runtime=runtime)
    job.total_counts()
    job.write_manifest(dim, complete=True)
    return job.stats
