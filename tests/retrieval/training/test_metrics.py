"""Retrieval metrics (eval and fine-tuning share them) against a brute-force full sort."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.metrics import brute_force

from clipdex.retrieval.training.metrics import group_pairs, retrieval_metrics
from clipdex.retrieval.training.pairs import Pair


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_brute_force_with_duplicates_and_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_img = 40
    img = _unit(rng.normal(size=(n_img, 8)))
    img[5] = img[4]  # an exact duplicate image: ties with every query
    img[20] = img[21] = img[22]
    pairs = []
    for i in range(n_img):
        for _ in range(rng.integers(1, 4)):  # 1-3 captions per image, drawn from a small vocabulary,
            pairs.append(Pair(f"/img/{i}.png", f"caption {rng.integers(0, 50)}"))  # so many repeat
    paths, texts, relevant = group_pairs(pairs)
    assert len(texts) < len(pairs)  # shared captions exist: some texts have several positive images
    order = [int(p.split("/")[-1][:-4]) for p in paths]
    vec_of_text = {t: _unit(rng.normal(size=(1, 8)))[0] for t in texts}
    txt = np.stack([vec_of_text[t] for t in texts])
    txt[3] = img[order.index(4)]  # a text exactly equal to the duplicated image: a tie at the top
    got = retrieval_metrics(img[order], txt, relevant)
    assert got == pytest.approx(brute_force(img[order], txt, relevant), abs=1e-12)


def test_ties_rank_pessimistically_and_shared_captions_have_several_positives() -> None:
    img = np.eye(3, dtype=np.float32)
    img[1] = img[0]  # images a and b are identical
    pairs = [Pair("a", "x"), Pair("b", "y"), Pair("c", "z"), Pair("c", "x")]
    paths, texts, relevant = group_pairs(pairs)
    assert (paths, texts) == (["a", "b", "c"], ["x", "y", "z"])
    assert relevant.tolist() == [[True, False, True], [False, True, False], [False, False, True]]
    txt = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    m = retrieval_metrics(img, txt, relevant)
    # "x" -> a (tie with b, placed after it: rank 2), then c at rank 3: AP = (1/2 + 2/3) / 2
    # "y" -> b ties with a, which goes first: rank 2; "z" -> c: rank 1
    assert m["t2i_r1"] == pytest.approx(1 / 3) and m["t2i_r5"] == 1.0
    assert m["t2i_median_rank"] == 2.0
    assert m["t2i_map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 2 + 1) / 3)
    # image -> text: a's positive "x" ties with "y" (pessimistic: rank 2); b's "y" ties with "x"
    assert m["i2t_r1"] == pytest.approx(1 / 3) and m["i2t_median_rank"] == 2.0


def test_an_image_or_text_without_a_positive_is_refused() -> None:
    with pytest.raises(ValueError):
        retrieval_metrics(np.eye(2), np.eye(2), np.array([[True, False], [True, False]]))
