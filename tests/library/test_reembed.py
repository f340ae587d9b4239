"""use-model / re-embedding: old vectors serve searches until the swap; an interrupted run resumes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.corehelp import make_images

from clipdex import Library
from clipdex.index.store.pending import PendingTable
from clipdex.retrieval.embed import encode_texts
from clipdex.retrieval.encoders import default_batch_size
from clipdex.retrieval.models import load_model, resolve_spec


class Interrupt(Exception):
    pass


def test_interrupted_reembed_keeps_old_vectors_and_resumes(
    tiny_model_dir, tiny_model_dir2, tmp_path, monkeypatch
):
    folder = tmp_path / "imgs"
    make_images(folder, [f"im{i}.png" for i in range(40)])
    (folder / "im3.txt").write_text("a caption for image three")
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, create=True, model=str(tiny_model_dir)) as lib:
        lib.index(folder)
        before = lib.search(text="a caption", k=5, target="images")
        old_ids, old_vecs = lib.store.vectors.all("image")

    # Interrupt the re-embedding after its first committed batch of pending vectors.
    encoded: list[int] = []
    real_put = PendingTable.put

    def put_then_stop(self, ids, vectors):
        real_put(self, ids, vectors)
        encoded.extend(ids)
        raise Interrupt

    monkeypatch.setattr(PendingTable, "put", put_then_stop)
    with Library.open(lib_dir) as lib, pytest.raises(Interrupt):
        lib.use_model(str(tiny_model_dir2))
    first_batch = set(encoded)
    assert len(first_batch) == default_batch_size("cpu")

    # Meanwhile the library still answers with its old model and old vectors.
    with Library.open(lib_dir) as lib:
        assert lib.spec == resolve_spec(str(tiny_model_dir))
        ids, vecs = lib.store.vectors.all("image")
        assert np.array_equal(ids, old_ids) and np.array_equal(vecs, old_vecs)
        assert [r.id for r in lib.search(text="a caption", k=5)] == [r.id for r in before]
        assert lib.store.pending.ids() == first_batch

    # Resume: only the remaining items are encoded; then the new model and vectors are in place.
    encoded.clear()
    monkeypatch.setattr(PendingTable, "put", lambda self, i, v: (encoded.extend(i), real_put(self, i, v)))
    with Library.open(lib_dir) as lib:
        n = lib.use_model(str(tiny_model_dir2)).total
        assert n == 41 - len(first_batch)
        assert not set(encoded) & first_batch
        assert lib.spec == resolve_spec(str(tiny_model_dir2))
        assert lib.store.pending.ids() == set()
        lm2 = load_model(resolve_spec(str(tiny_model_dir2)), "cpu")
        text_ids, text_vecs = lib.store.vectors.all("text")
        assert np.abs(text_vecs - encode_texts(lm2, ["a caption for image three"])).max() <= 1e-5
        ids, vecs = lib.store.vectors.all("image")
        assert np.array_equal(ids, old_ids) and not np.allclose(vecs, old_vecs)
        top = lib.search(image=folder / "im7.png", k=1)[0]
        assert top.path.endswith("im7.png") and top.score >= 0.9999
