"""FAISS GPU copies of a CPU index (the kinds FAISS supports there)."""

from __future__ import annotations

from clipdex.index.faiss import ann as _ann
from clipdex.index.faiss.ann import AnnIndex
from clipdex.index.faiss.runtime import faiss_module

GPU_KINDS = {"flat", "ivf-flat", "ivf-fp16", "ivf-pq"}


def to_gpu(ann: AnnIndex) -> AnnIndex:
    """A copy on all GPUs for the kinds FAISS supports there; `ann` itself when there are none."""
    faiss = faiss_module()
    if ann.kind not in GPU_KINDS or ann.on_gpu or faiss.get_num_gpus() == 0:
        return ann
    if ann.info["params"].get("nprobe", 0) > _ann.GPU_MAX_K:  # more lists than a GPU search can probe
        return ann
    co = faiss.GpuMultipleClonerOptions()
    co.useFloat16 = ann.kind == "ivf-pq"  # float16 lookup tables: needed for 64 sub-quantisers
    try:
        index = faiss.index_cpu_to_all_gpus(ann.index, co)
    except RuntimeError as e:  # e.g. an unsupported PQ size: stay on the CPU, say why
        ann.info["gpu_error"] = str(e).splitlines()[0]
        return ann
    gpu = AnnIndex(ann.kind, index, dict(ann.info, device="gpu"), ann.codec, set(ann.removed), cpu=ann)
    gpu.info["params"] = dict(ann.info["params"])
    gpu.set_params(**{p: v for p, v in gpu.info["params"].items() if p == "nprobe"})
    return gpu
