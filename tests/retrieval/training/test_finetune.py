"""Fine-tuning: recall rises on held-out scenes, the saved model is plain open_clip, and the training
controls (--wise, --lock-*, --unlock-last, --accum-steps, --seed) do exactly what they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clipdex.demo import make_scenes
from clipdex.errors import ClipdexError
from clipdex.retrieval.models import WEIGHTS_NAME, load_model, read_local_config, resolve_spec
from clipdex.retrieval.training import steps as tu
from clipdex.retrieval.training.finetune import FinetuneConfig, finetune
from clipdex.retrieval.training.pairs import read_pairs, split_pairs

FAST = dict(epochs=1, batch_size=16, lr=1e-3)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, list]:
    folder = tmp_path_factory.mktemp("scenes")
    make_scenes(folder, 300, seed=0, size=64)
    pairs, empty = read_pairs(folder)
    assert len(pairs) == 300 and empty == 0
    train, val, _ = split_pairs(pairs, 0.2, seed=0)  # 240 train, 60 held out
    return train, val


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, scenes, tmp_path_factory: pytest.TempPathFactory):
    train, val = scenes
    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    out = tmp_path_factory.mktemp("tuned") / "model"
    cfg = FinetuneConfig(epochs=8, batch_size=32, lr=1e-3, seed=0)
    return finetune(lm, train, val, cfg, out), val, out


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / WEIGHTS_NAME))


def _run(tiny_model_dir: Path, scenes, out: Path, **kw):
    train, val = scenes
    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    return finetune(lm, train[:96], val[:24], FinetuneConfig(**{**FAST, **kw}), out), lm


def test_finetuning_raises_held_out_recall_far_above_chance(trained) -> None:
    result, val, _ = trained
    chance_r5 = 5 / len(val)  # ~0.08 for 60 images
    # measured: before ~0.07, after ~0.55 (t2i R@5); the margin leaves room for platform noise
    assert result.before["t2i_r5"] < 0.2
    assert result.after["t2i_r5"] >= 0.3 > 3 * chance_r5
    assert result.after["i2t_r5"] >= 0.3
    assert (result.train_pairs, result.val_pairs, result.skipped) == (240, 60, 0)
    assert 1 <= result.best_epoch <= result.epochs_run == 8
    best = result.history[result.best_epoch - 1]
    assert best["score"] == max(h["score"] for h in result.history)


def _open_clip_vectors(out: Path, val) -> tuple[np.ndarray, np.ndarray, list[int]]:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    model.eval()
    paths = sorted({p.image for p in val})
    owner = [paths.index(p.image) for p in val]
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        img = model.encode_image(pixels)
        txt = model.encode_text(tokenizer([p.caption for p in val]))
    img = (img / img.norm(dim=-1, keepdim=True)).numpy()
    txt = (txt / txt.norm(dim=-1, keepdim=True)).numpy()
    return img, txt, owner


def test_reported_recall_equals_an_independent_computation(trained) -> None:
    result, val, out = trained
    img, txt, owner = _open_clip_vectors(out, val)
    # a caption shared by several held-out images is one query with all of them as positives
    captions = sorted({p.caption for p in val})
    relevant = np.zeros((len(captions), len(img)), bool)
    for p, i in zip(val, owner, strict=True):
        relevant[captions.index(p.caption), i] = True
    qvec = np.stack([txt[[p.caption for p in val].index(c)] for c in captions])
    sims = qvec.astype(np.float64) @ img.astype(np.float64).T

    def first_hits(scores, rel):  # full sort, ties with a non-positive placed first
        return np.array([np.flatnonzero(r[np.lexsort((r, -s))])[0] + 1 for s, r in zip(scores, rel)])

    t2i, i2t = first_hits(sims, relevant), first_hits(sims.T, relevant.T)
    expect = {f"t2i_r{k}": float(np.mean(t2i <= k)) for k in (1, 5, 10)}
    expect.update({f"i2t_r{k}": float(np.mean(i2t <= k)) for k in (1, 5, 10)})
    assert result.report_split == "val"  # no test split was given to finetune() here
    assert result.after == pytest.approx(expect, abs=1e-9)


def test_saved_model_is_plain_open_clip_and_matches_clipdex_embeddings(trained, tiny_model_dir: Path) -> None:
    from helpers.embedhelp import encode_images

    from clipdex.retrieval.decode import open_image
    from clipdex.retrieval.embed import encode_texts

    _, val, out = trained
    assert read_local_config(out)["preprocess_cfg"] == read_local_config(tiny_model_dir)["preprocess_cfg"]
    img, txt, _ = _open_clip_vectors(out, val)
    lm = load_model(resolve_spec(str(out)), "cpu")
    paths = sorted({p.image for p in val})
    np.testing.assert_allclose(encode_images(lm, [open_image(p) for p in paths]), img, atol=1e-5)
    np.testing.assert_allclose(encode_texts(lm, [p.caption for p in val]), txt, atol=1e-5)


def test_wise_zero_is_exactly_the_start_and_the_loaded_model_is_given_back(
    tiny_model_dir, scenes, tmp_path
) -> None:
    result, lm = _run(tiny_model_dir, scenes, tmp_path / "w0", wise=0.0)
    start, saved = _weights(tiny_model_dir), _weights(tmp_path / "w0")
    assert start.keys() == saved.keys()
    assert all(torch.equal(start[k], saved[k]) for k in start)
    assert result.after == result.before
    state = lm.model.state_dict()  # training happened on lm.model; its weights are restored
    assert all(torch.equal(start[k], state[k]) for k in start)
    assert all(p.requires_grad for p in lm.model.parameters())


def test_seed_makes_training_repeatable(tiny_model_dir, scenes, tmp_path) -> None:
    _run(tiny_model_dir, scenes, tmp_path / "a", seed=5)
    _run(tiny_model_dir, scenes, tmp_path / "b", seed=5)
    a, b, start = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tiny_model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual.proj"], start["visual.proj"])


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_lock_image_keeps_the_image_tower(tiny_model_dir, scenes, tmp_path) -> None:
    _run(tiny_model_dir, scenes, tmp_path / "li", lock_image=True)
    changed = _changed(_weights(tiny_model_dir), _weights(tmp_path / "li"))
    assert not any(k.startswith("visual.") for k in changed)
    assert "text_projection" in changed and "logit_scale" in changed


def test_unlock_last_trains_exactly_the_last_block_and_head(tiny_model_dir, scenes, tmp_path) -> None:
    _run(tiny_model_dir, scenes, tmp_path / "u1", lock_image=True, unlock_last=1)
    changed = {
        k for k in _changed(_weights(tiny_model_dir), _weights(tmp_path / "u1")) if k.startswith("visual.")
    }
    last = "visual.transformer.resblocks.1."  # TINY_CFG has 2 vision layers
    assert {k for k in changed if not k.startswith(last)} == {
        "visual.ln_post.weight",
        "visual.ln_post.bias",
        "visual.proj",
    }
    block = {k for k in _weights(tiny_model_dir) if k.startswith(last)}
    assert changed >= block


def test_accumulated_micro_batches_give_the_big_batch_gradient(tiny_model_dir) -> None:
    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    model = lm.model.train()
    loss_fn = tu.make_loss(model)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 64, 64, generator=gen)
    texts = lm.tokenizer([f"a photo of thing number {i}" for i in range(16)])

    def grads(micro) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = tu.contrastive_step(model, loss_fn, micro)
        return loss, {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_big, big = grads([(images, texts)])
    loss_acc, acc = grads([(images[:8], texts[:8]), (images[8:], texts[8:])])
    assert loss_acc == pytest.approx(loss_big, rel=1e-5)
    for name in big:
        torch.testing.assert_close(acc[name], big[name], rtol=1e-4, atol=1e-6, msg=name)
    assert big["logit_scale"].abs().item() > 0  # counted once, not once per micro-batch


def test_too_few_pairs_suggest_a_smaller_batch(tiny_model_dir, scenes, tmp_path) -> None:
    train, val = scenes
    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    with pytest.raises(ClipdexError, match=r"only 10 training pairs.*smaller --batch-size"):
        finetune(lm, train[:10], val[:5], FinetuneConfig(batch_size=16), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_out_dir_that_is_not_a_model_is_refused(tiny_model_dir, scenes, tmp_path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "keep.jpg").write_bytes(b"x")
    with pytest.raises(ClipdexError, match="not a model directory"):
        _run(tiny_model_dir, scenes, tmp_path / "photos")
    assert (tmp_path / "photos" / "keep.jpg").exists()


def test_recall_counts_any_caption_of_an_image_for_image_to_text() -> None:
    from clipdex.retrieval.training.metrics import recall_at_k

    images = np.eye(3, dtype=np.float32)
    # image 2 has two captions: one good, one closer to image 1
    texts = np.array([[1, 0, 0], [0, 1, 0], [0, 0.2, 0.98], [0, 0.95, 0.31]], np.float32)
    owner = np.eye(3, dtype=bool)[[0, 1, 2, 2]]  # (texts, images) relevance
    r = recall_at_k(images, texts, owner, ks=(1, 2))
    assert r == {"t2i_r1": 0.75, "t2i_r2": 1.0, "i2t_r1": 1.0, "i2t_r2": 1.0}
    r = recall_at_k(images, texts[[0, 1, 3]], owner[[0, 1, 3]], ks=(1, 2))
    # the caption that fits image 1 better misses text->image, yet image 2 still ranks it first
    assert r["t2i_r1"] == pytest.approx(2 / 3) and r["i2t_r1"] == 1.0


def test_cli_finetune_json_and_apply(tiny_model_dir, tmp_path) -> None:
    from helpers.corehelp import ok, run

    scenes = tmp_path / "scenes"
    make_scenes(scenes, 60, seed=3, size=64)
    lib = tmp_path / "lib"
    ok("--library", lib, "index", scenes, "--model", tiny_model_dir, "--quiet")
    res = ok("--library", lib, "finetune", scenes, "--epochs", "1", "--batch-size", "16", "--lr", "1e-3",
             "--val-fraction", "0.2", "--apply", "--json")  # fmt: skip
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["model"].startswith(f"local-dir:{lib.resolve()}/models/finetune-")
    assert (out["train_pairs"], out["val_pairs"], out["test_pairs"], out["skipped"]) == (42, 12, 6, 0)
    assert out["report_split"] == "test"
    assert (
        set(out["before"])
        == set(out["after"])
        == {"t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10"}
    )
    assert out["reembedded"] >= 60
    info = json.loads(ok("--library", lib, "info", "--json").stdout)
    assert info["model"] == out["model"]
    bad = run("--library", lib, "finetune", scenes, "--batch-size", "64")
    assert bad.exit_code == 1 and "--batch-size" in bad.stderr


def test_library_finetune_chooses_on_val_and_reports_on_a_disjoint_test_split(
    tiny_model_dir, tmp_path
) -> None:
    import clipdex
    from clipdex import Library

    folder = tmp_path / "scenes"
    make_scenes(folder, 100, seed=4, size=64)
    pairs, _ = read_pairs(folder)
    with Library.open(tmp_path / "lib", create=True, model=str(tiny_model_dir)) as lib:
        result = lib.finetune(
            [(p.image, p.caption) for p in pairs], config=FinetuneConfig(**{**FAST, "seed": 2}),
            val_fraction=0.2, test_fraction=0.1, out=tmp_path / "tuned",
        )  # fmt: skip
    train, val, test = split_pairs(pairs, 0.2, seed=2, test_fraction=0.1)  # the same seeded split
    assert (
        (result.train_pairs, result.val_pairs, result.test_pairs)
        == (len(train), len(val), len(test))
        == (70, 20, 10)
    )
    assert {p.image for p in test}.isdisjoint({p.image for p in train + val})
    assert result.report_split == "test" and result.model == f"local-dir:{(tmp_path / 'tuned').resolve()}"
    # "after" is the saved model on exactly the test pictures, as `clipdex eval` measures it
    (after,) = clipdex.evaluate(test, [result.model], device="cpu")
    assert result.after == pytest.approx({k: after[k] for k in result.after}, abs=1e-9)


def test_too_few_images_for_a_test_split_report_on_validation_and_say_so(tiny_model_dir, tmp_path) -> None:
    from helpers.corehelp import ok

    scenes = tmp_path / "scenes"
    make_scenes(scenes, 40, seed=5, size=64)
    lib = tmp_path / "lib"
    ok("--library", lib, "index", scenes, "--model", tiny_model_dir, "--quiet")
    res = ok("--library", lib, "finetune", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--json")
    out = json.loads(res.stdout)
    assert (out["train_pairs"], out["val_pairs"], out["test_pairs"], out["report_split"]) == (36, 4, 0, "val")
    assert "validation split" in res.stderr


def test_val_file_chooses_the_epoch_and_the_test_split_comes_from_pairs(tiny_model_dir, tmp_path) -> None:
    from clipdex import Library

    make_scenes(tmp_path / "train", 60, seed=6, size=64)
    make_scenes(tmp_path / "val", 12, seed=7, size=64)
    with Library.open(tmp_path / "lib", create=True, model=str(tiny_model_dir)) as lib:
        result = lib.finetune(tmp_path / "train", val=tmp_path / "val", config=FinetuneConfig(**FAST),
                              out=tmp_path / "tuned")  # fmt: skip
    counts = (result.train_pairs, result.val_pairs, result.test_pairs)
    assert counts == (54, 12, 6) and result.report_split == "test"


def test_view_cache_never_holds_more_than_its_bound(scenes) -> None:
    from open_clip import image_transform

    from clipdex.retrieval.training.finetune import _split_transform
    from clipdex.retrieval.training.pairs import decode_pairs, view_nbytes

    train, val = scenes
    pairs = [*val, *train][:80]
    lm_pp = _split_transform(image_transform(64, is_train=False))[0]  # PIL part: 64x64 RGB views
    full = decode_pairs(pairs, prepare=lm_pp)
    one = view_nbytes(full.images[pairs[0].image])
    assert one == 64 * 64 * 3 and full.images.cached == len({p.image for p in pairs})
    bound = 10 * one + one // 2  # room for 10 views, not 11
    small = decode_pairs(pairs, prepare=lm_pp, cache_bytes=bound)
    assert small.images.cached == 10 and small.images.nbytes <= bound
    assert small.pairs == full.pairs and len(small.images) == len(full.images)
    for p in pairs:  # a view past the bound is decoded again, pixel for pixel the same
        assert np.array_equal(np.asarray(small.images[p.image]), np.asarray(full.images[p.image]))
    assert small.images.cached == 10 and small.images.nbytes <= bound  # reading added nothing


def test_bounded_cache_trains_exactly_like_the_unbounded_one(tiny_model_dir, scenes, tmp_path) -> None:
    _run(tiny_model_dir, scenes, tmp_path / "all", seed=3, cache_mb=None)
    _run(tiny_model_dir, scenes, tmp_path / "none", seed=3, cache_mb=0)  # every view decoded per use
    a, b = _weights(tmp_path / "all"), _weights(tmp_path / "none")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra = json.loads((tmp_path / "all" / "clipdex_finetune.json").read_text())
    rb = json.loads((tmp_path / "none" / "clipdex_finetune.json").read_text())
    assert (
        ra["before"] == rb["before"]
        and ra["after"] == rb["after"]
        and ra["history"][0]["loss"] == rb["history"][0]["loss"]
    )


def test_on_step_reports_every_optimizer_step(tiny_model_dir: Path, scenes, tmp_path: Path) -> None:
    """The engine draws nothing: a caller (the CLI's bar) gets each step's figures."""
    train, val = scenes
    lm = load_model(resolve_spec(str(tiny_model_dir)), "cpu")
    steps = []
    cfg = FinetuneConfig(**{**FAST, "epochs": 2, "accum_steps": 2})
    result = finetune(lm, train[:96], val[:24], cfg, tmp_path / "m", on_step=lambda *a: steps.append(a))
    per_epoch = 96 // 16 // 2  # full batches of 16, two per optimizer step
    assert [s for s, _, _ in steps] == list(range(1, 2 * per_epoch + 1))
    assert {t for _, t, _ in steps} == {2 * per_epoch}
    assert [f["epoch"] for *_, f in steps] == [1] * per_epoch + [2] * per_epoch
    losses = [f["loss"] for *_, f in steps[:per_epoch]]
    assert np.isclose(np.mean(losses), result.history[0]["loss"])
    assert steps[-1][2]["lr"] == result.history[-1]["lr"]
