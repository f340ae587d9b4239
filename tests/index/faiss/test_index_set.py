"""IndexSet: the FAISS files follow the store; image indexes are tuned on stored text queries."""

from __future__ import annotations

import numpy as np

from clipdex.index.faiss.index_set import IndexSet
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE, TEXT


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_image_index_tuned_on_texts_and_rebuilt_when_stale(tmp_path):
    rng = np.random.default_rng(0)
    store = Store(tmp_path, create=True)
    store.meta.set("dim", "32")
    image_ids = store.items.insert_many(
        IMAGE, "import", _unit(rng, 1500, 32), paths=[b"/x/%d" % i for i in range(1500)]
    )
    store.items.insert_many(TEXT, "import", _unit(rng, 150, 32), texts=[f"t{i}" for i in range(150)])
    store.bump_generation()
    indexes = IndexSet(tmp_path, store)
    indexes.set_index_type("ivf-flat")
    image = indexes.get(IMAGE)
    assert image.info["type"] == "ivf-flat" and image.info["tune_queries"] == 150
    assert indexes.get(TEXT).info["type"] == "flat"  # too few texts to train an IVF
    # Saved with the generation; a fresh IndexSet loads it instead of rebuilding.
    again = IndexSet(tmp_path, store).get(IMAGE)
    assert again.info["build_seconds"] == image.info["build_seconds"] and again.ntotal == 1500
    # A store change makes the file stale: the next reader rebuilds without the deleted items.
    with store.transaction():
        store.items.delete(image_ids[:10])
        store.bump_generation()
    fresh = IndexSet(tmp_path, store).get(IMAGE)
    assert fresh.ntotal == 1490 and fresh.generation == store.generation
    store.close()
