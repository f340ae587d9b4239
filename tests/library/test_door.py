"""The one door: what the CLI and the server need from the engine, as `Library` methods."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.corehelp import brute_force, json_lines, make_images, ok, stored

from clipdex import Filter, Library
from clipdex.errors import ClipdexError, DecodeError, QueryError
from clipdex.kinds import IMAGE


@pytest.fixture(scope="module")
def lib(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("door")
    make_images(root / "pics" / "a", ["a1.png", "a2.png", "a3.png"], seed=1)
    make_images(root / "pics" / "b", ["b1.png", "b2.png"], seed=2)
    (root / "pics" / "a" / "a1.txt").write_text("a caption for a1")
    (root / "pics" / "b" / "b2.txt").write_text("another caption")
    library = Library.open(root / "lib", create=True, model=str(tiny_model_dir))
    library.index(root / "pics")
    library.root = root
    yield library
    library.close()


def test_plan_and_query_vector_are_what_search_ranks_by(lib):
    plan = lib.plan_query(["a red square", "noise"], not_text="blue", weights=[1.0, 0.5, 0.25])
    q = lib.query_vector(plan)
    assert q.shape == (lib.store.dim,) and abs(float(np.linalg.norm(q)) - 1) < 1e-5
    hits = lib.search(["a red square", "noise"], not_text="blue", weights=[1.0, 0.5, 0.25], k=5)
    ids, vecs = stored(lib.path, IMAGE)
    want = brute_force(ids, vecs, q, 5)
    assert [h.id for h in hits] == [i for i, _ in want]
    assert all(abs(h.score - s) < 1e-4 for h, (_, s) in zip(hits, want))


def test_query_vector_uses_the_encoders_given_in_term_order(lib):
    seen = []

    def texts(batch):
        seen.append(list(batch))
        return lib.encode_texts(batch)

    picture = lib.root / "pics" / "a" / "a2.png"
    plan = lib.plan_query("one", [picture], "two", None)
    mine = lib.query_vector(plan, texts, lambda images: lib.encode_images(images))
    assert seen == [["one", "two"]]  # positives then negatives, one batch
    assert np.allclose(mine, lib.query_vector(plan), atol=1e-6)


def test_bad_plans_fail_before_encoding_and_cancelling_terms_are_a_query_error(lib):
    with pytest.raises(ValueError, match="weights"):
        lib.plan_query("a", weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="non-empty"):
        lib.plan_query("  ")
    with pytest.raises(QueryError, match="cancel out"):
        lib.query_vector(lib.plan_query("same words", not_text="same words"))


def test_count_with_a_filter_counts_the_items_that_pass(lib):
    assert lib.count() == 5 and lib.count("texts") == 2
    assert lib.count(filter=Filter(under=[str(lib.root / "pics" / "b")])) == 2
    assert lib.count(filter=Filter(captioned=True)) == 2
    assert lib.count("image", filter=Filter(captioned=False)) == 3
    assert lib.count(filter=Filter(min_score=0.5)) == 5  # a score bound restricts no item


def test_item_and_captions(lib):
    hit = lib.search("anything", k=5)
    by_name = {h.path.rsplit("/", 1)[-1]: h.id for h in hit}
    rec = lib.item(by_name["a1.png"])
    assert rec["kind"] == "image" and rec["path"].endswith(b"a1.png") and rec["size"] > 0
    assert [t for _, t in lib.captions(by_name["a1.png"])] == ["a caption for a1"]
    assert lib.captions(by_name["a2.png"]) == []
    ((cap_id, _),) = lib.captions(by_name["b2.png"])
    assert lib.item(cap_id)["text"] == "another caption" and lib.item(cap_id)["image_id"] == by_name["b2.png"]
    assert lib.item(-1) is None and lib.item(2**63) is None and lib.item(10**9) is None


def test_encoding_files_and_pictures_matches_the_stored_vectors(lib):
    path = lib.root / "pics" / "b" / "b1.png"
    from_file = lib.encode_images([path])
    from_picture = lib.encode_images([lib.open_image(path)])
    assert from_file.shape == (1, lib.store.dim)
    assert np.allclose(from_file, from_picture, atol=1e-5)
    item_id = lib.resolve_item(path)
    assert float(from_file[0] @ lib.store.vectors.get([item_id])[0]) > 0.9999
    assert lib.encode_images([]).shape == (0, lib.store.dim)
    texts = lib.encode_texts(["a", "b"])
    assert texts.shape == (2, lib.store.dim) and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)


def test_pictures_and_sizes(lib, tmp_path):
    path = lib.root / "pics" / "a" / "a3.png"
    assert Library.image_size(path) == (64, 64)
    assert Library.image_size(tmp_path / "missing.png") is None
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(DecodeError):
        Library.open_image(tmp_path / "bad.png")
    with pytest.raises(ClipdexError, match="cannot read query image"):
        lib.encode_images([tmp_path / "bad.png"])


def test_explain_with_the_library_model_or_another(lib, tiny_model_dir2):
    path = lib.root / "pics" / "a" / "a3.png"
    mine = lib.explain(path, "a red square")
    cosine = float(lib.encode_images([path])[0] @ lib.encode_texts(["a red square"])[0])
    assert abs(mine.score - cosine) < 1e-4
    assert mine.heat.shape == lib.open_image(path).size[::-1]
    other = lib.explain(lib.open_image(path), "a red square", model=str(tiny_model_dir2))
    assert abs(other.score - mine.score) > 1e-4  # another model, another score
    by_vector = lib.explain(path, vector=lib.encode_texts(["a red square"])[0] * 3)
    assert abs(by_vector.score - mine.score) < 1e-5
    with pytest.raises(ValueError, match="exactly one"):
        lib.explain(path)


def test_cli_explain_scores_as_the_library_does(lib, tmp_path):
    path = lib.root / "pics" / "b" / "b1.png"
    out = json_lines(
        ok(
            "--library",
            lib.path,
            "explain",
            path,
            "a",
            "red",
            "square",
            "--out",
            tmp_path / "h.png",
            "--json",
        ).stdout
    )[0]
    assert abs(out["score"] - lib.explain(path, "a red square").score) < 1e-5
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
