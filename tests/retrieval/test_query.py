"""Composed queries (text/image terms, weights, NOT), checked against brute force on the stored vectors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers.corehelp import brute_force, json_lines, make_images, ok, stored

from clipdex import Library
from clipdex.errors import ClipdexError
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE


# ---- composed queries ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("composed")
    paths = make_images(root / "pics", [f"im{i:02d}.png" for i in range(24)], seed=3)
    lib_dir = root / "lib"
    ok("--library", lib_dir, "index", root / "pics", "--model", tiny_model_dir, "--quiet")
    ok("--library", lib_dir, "add-texts", _texts(root), "--quiet")
    return {"lib": lib_dir, "paths": paths}


def _texts(root):
    path = root / "texts.txt"
    path.write_text("a red bus\na blue car\na green tree\na dog on a beach\nsunset over the sea\n")
    return path


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_composed_query_equals_brute_force_on_the_composed_vector(photos):
    from clipdex.retrieval.embed import encode_texts

    ids, vecs = stored(photos["lib"], IMAGE)
    by_path = {os.fsdecode(p): i for p, i in _path_ids(photos["lib"]).items()}
    p3, p7, p11 = (str(photos["paths"][f"im{n:02d}.png"]) for n in (3, 7, 11))
    with Library.open(photos["lib"]) as lib:
        t = encode_texts(lib.model, ["a red bus", "a blue car"])
        stored_vec = dict(zip(ids.tolist(), vecs))
        weights = [0.5, 1.0, 2.0, 0.7, 0.3]  # text, image, image, not_text, not_image
        q = _unit(0.5 * t[0] + 1.0 * stored_vec[by_path[p3]] + 2.0 * stored_vec[by_path[p7]]
                  - 0.7 * t[1] - 0.3 * stored_vec[by_path[p11]]).astype(np.float32)  # fmt: skip
        hits = lib.search(text="a red bus", image=[p3, p7], not_text=["a blue car"], not_image=p11,
                          weights=weights, k=24)  # fmt: skip
        assert [(h.id, pytest.approx(h.score, abs=1e-6)) for h in hits] == brute_force(ids, vecs, q, 24)
        # The same weights as a mapping; a wrong count is refused before anything is encoded.
        by_role = {"text": 0.5, "image": [1.0, 2.0], "not_text": 0.7, "not_image": 0.3}
        again = lib.search(text="a red bus", image=[p3, p7], not_text="a blue car", not_image=[p11], k=24,
                           weights=by_role)  # fmt: skip
        assert [h.id for h in again] == [h.id for h in hits]
        with pytest.raises(ValueError):
            lib.search(text="a red bus", image=p3, weights=[1.0])
        with pytest.raises(ValueError):
            lib.search(not_text="a blue car")
        with pytest.raises(ClipdexError, match="cancel"):
            lib.search(text="a red bus", not_text="a red bus")


def test_cli_composed_query_weighs_every_term_one(photos):
    from clipdex.retrieval.embed import encode_texts

    ids, vecs = stored(photos["lib"], IMAGE)
    by_path = {os.fsdecode(p): i for p, i in _path_ids(photos["lib"]).items()}
    p5, p9 = str(photos["paths"]["im05.png"]), str(photos["paths"]["im09.png"])
    res = ok("--library", photos["lib"], "search", "a", "dog", "--image", p5, "--not", "a green tree",
             "--not-image", p9, "-k", "10", "--json")  # fmt: skip
    with Library.open(photos["lib"]) as lib:
        t = encode_texts(lib.model, ["a dog", "a green tree"])
    v = dict(zip(ids.tolist(), vecs))
    q = _unit(t[0] + v[by_path[p5]] - t[1] - v[by_path[p9]]).astype(np.float32)
    got = [(r["id"], pytest.approx(r["score"], abs=1e-6)) for r in json_lines(res.stdout)]
    assert got == brute_force(ids, vecs, q, 10)


def test_not_demotes_what_it_names(photos):
    p2 = str(photos["paths"]["im02.png"])
    base = json_lines(ok("--library", photos["lib"], "search", "--image", p2, "-k", "24", "--json").stdout)
    runner_up = base[1]  # the image most like im02 (after itself)
    res = ok("--library", photos["lib"], "search", "--image", p2, "--not-image", runner_up["path"],
             "-k", "24", "--json")  # fmt: skip
    after = {r["id"]: r for r in json_lines(res.stdout)}
    assert after[runner_up["id"]]["rank"] > 2 and after[runner_up["id"]]["score"] < runner_up["score"]
    # A negative text demotes that text among the stored texts.
    q = ["--library", photos["lib"], "search", "a red bus", "--target", "texts", "-k", "5", "--json"]
    second = json_lines(ok(*q).stdout)[1]  # the stored text most like "a red bus", after itself
    after = {r["text"]: r for r in json_lines(ok(*q, "--not", second["text"]).stdout)}
    assert after[second["text"]]["rank"] > 2 and after[second["text"]]["score"] < second["score"]


def _path_ids(lib_dir):
    s = Store(lib_dir)
    try:
        return {p: rec.id for p, rec in s.items.image_files().items() if rec.source == "scan"}
    finally:
        s.close()
