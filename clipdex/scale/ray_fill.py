"""Filling a large-library index's blocks in parallel Ray tasks (`import-embeddings --ray`).

The driver reads the stored vectors block by block (bounded memory, as in-process); each block
goes to a Ray task that adds it to a copy of the trained IVF-PQ (assigning every vector to its
list and encoding it: most of a build's time) and returns the serialised block, which the driver
writes for `merge_ondisk`. At most twice the cluster's CPUs' worth of blocks are in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from clipdex.scale import require_ray


class RayFill:
    """A `clipdex.index.faiss.ondisk_build.Fill` that runs each block in a Ray task on ``address``'s cluster
    (``local``: ``$RAY_ADDRESS``, else a local cluster started for the build)."""

    how = "ray"

    def __init__(self, address: str = "local"):
        require_ray()
        self.address = address

    def __call__(self, trained: Any, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        import faiss
        import ray

        from clipdex.scale.ray_job import connect

        started = connect(self.address)
        try:
            task = ray.remote(num_cpus=1)(_fill_block)
            trained_ref = ray.put(faiss.serialize_index(trained))
            in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
            pending: deque = deque()
            for ids, vecs in chunks:
                pending.append(task.remote(trained_ref, ids, vecs))
                if len(pending) >= in_flight:
                    yield ray.get(pending.popleft())
            while pending:
                yield ray.get(pending.popleft())
        finally:
            if started:
                ray.shutdown()


def _fill_block(trained: np.ndarray, ids: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """In a Ray worker: a copy of the trained index with this block added, serialised."""
    import faiss

    faiss.omp_set_num_threads(1)  # one CPU per task: Ray runs as many tasks as the cluster has
    part = faiss.deserialize_index(trained)
    part.add_with_ids(np.ascontiguousarray(vecs, np.float32), np.asarray(ids, np.int64))
    return faiss.serialize_index(part)
