"""Models with a Hugging Face text tower: `model init --text-tower hf` writes a self-contained,
movable folder that plain open_clip loads too; clipdex's vectors are open_clip's; missing files
fail in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.hfhelp import TEXTS, open_clip_text_vectors, tiny_hf_model

from clipdex.errors import ModelError
from clipdex.retrieval import hf_text
from clipdex.retrieval.embed import encode_texts
from clipdex.retrieval.models import CONFIG_NAME, load_model, read_local_config, resolve_spec
from clipdex.retrieval.training.steps import freeze_towers


@pytest.fixture(scope="module")
def moved(tiny_hf_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny HF model moved (copied, then the original's path is gone for it) somewhere else."""
    dst = tmp_path_factory.mktemp("moved") / "renamed-model"
    shutil.copytree(tiny_hf_model_dir, dst)
    return dst


def test_init_writes_a_self_contained_folder(tiny_hf_model_dir: Path) -> None:
    names = {p.name for p in tiny_hf_model_dir.iterdir()}
    assert {CONFIG_NAME, "open_clip_model.safetensors", "config.json", "tokenizer.json"} <= names
    text_cfg = read_local_config(tiny_hf_model_dir)["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == "." and text_cfg["context_length"] == 32
    for f in tiny_hf_model_dir.iterdir():  # no path of the machine (absolute or temp) in any file
        text = f.read_bytes()
        assert str(tiny_hf_model_dir).encode() not in text and b"/tmp" not in text, f.name
    hf_cfg = json.loads((tiny_hf_model_dir / "config.json").read_text())
    assert hf_cfg["model_type"] == "xlm-roberta" and hf_cfg["num_hidden_layers"] == 2


def test_vectors_equal_plain_open_clip_after_a_move(moved: Path) -> None:
    lm = load_model(resolve_spec(str(moved)), "cpu")
    assert type(lm.model.text).__name__ == "HFTextEncoder" and lm.embed_dim == 64
    ours = encode_texts(lm, TEXTS)
    theirs, ids = open_clip_text_vectors(moved, TEXTS)
    assert np.array_equal(lm.tokenizer(TEXTS).numpy(), ids)
    assert np.abs(ours - theirs).max() <= 1e-5
    # the texts are told apart (not all <unk>): Chinese and emoji have their own ids
    assert len({tuple(row) for row in ids}) == len(TEXTS)
    assert (ids[0] != 3).sum() > 3 and (ids[1] != 3).sum() > 3


def test_same_seed_same_model_other_seed_other_model(tiny_hf_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    again, other = tiny_hf_model(tmp_path, "again", seed=0), tiny_hf_model(tmp_path, "other", seed=1)
    a, b, c = (load_file(str(d / "open_clip_model.safetensors")) for d in (tiny_hf_model_dir, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_tokenizer_from_a_corpus_or_handed_over(tiny_hf_model_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["长颈鹿在草原上", "giraffe on the savanna"] * 30), encoding="utf-8")
    own = tiny_hf_model(tmp_path, "own", corpus=str(corpus))
    lm = load_model(resolve_spec(str(own)), "cpu")
    vocab = lm.tokenizer.tokenizer.get_vocab()
    assert len(vocab) < 100 and any("长" in piece for piece in vocab) and "狗" not in vocab
    handed = tiny_hf_model(tmp_path, "handed", tokenizer=str(tiny_hf_model_dir / "tokenizer.json"))
    a = load_model(resolve_spec(str(handed)), "cpu").tokenizer(TEXTS)
    b = load_model(resolve_spec(str(tiny_hf_model_dir)), "cpu").tokenizer(TEXTS)
    assert torch.equal(a, b)


def test_missing_tokenizer_is_one_line(tiny_hf_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_hf_model_dir, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelError) as e:
        load_model(resolve_spec(str(broken)), "cpu")
    msg = str(e.value)
    assert "\n" not in msg and "no tokenizer" in msg and "tokenizer.json" in msg and str(broken) in msg
    (broken / "config.json").unlink()
    shutil.copy(tiny_hf_model_dir / "tokenizer.json", broken)
    with pytest.raises(ModelError, match="config.json is missing"):
        load_model(resolve_spec(str(broken)), "cpu")


def test_a_hub_text_tower_not_cached_offline_names_what_to_download(monkeypatch: pytest.MonkeyPatch) -> None:
    from clipdex.retrieval import models

    cfg = {"text_cfg": {"hf_model_name": "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base"}}
    assert hf_text.missing_hub_files(cfg) == ["xlm-roberta-base"]  # HF_HOME is an empty temp dir
    monkeypatch.setattr(models, "_offline", lambda host="": True)
    monkeypatch.setattr(models, "_is_cached", lambda spec: True)  # the CLIP weights are there
    spec = models.ModelSpec("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k")
    with pytest.raises(ModelError) as e:
        models._check_reachable_or_cached(spec, cfg)
    assert "huggingface-cli download xlm-roberta-base" in str(e.value) and "\n" not in str(e.value)


def test_unlock_last_maps_onto_the_transformer_layers(tiny_hf_model_dir: Path) -> None:
    lm = load_model(resolve_spec(str(tiny_hf_model_dir)), "cpu")
    model = lm.model
    try:
        freeze_towers(model, lock_image=False, lock_text=True, unlock_last=1)
        trainable = {n for n, p in model.text.named_parameters() if p.requires_grad}
        assert trainable and all(n.startswith(("transformer.encoder.layer.1.", "proj.")) for n in trainable)
        assert any(n.startswith("proj.") for n in trainable)
        assert all(p.requires_grad for p in model.visual.parameters())
        with pytest.raises(Exception, match="only 2 blocks"):
            freeze_towers(model, lock_image=False, lock_text=True, unlock_last=3)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def test_finetuned_copy_is_self_contained_too(tiny_hf_model_dir: Path, tmp_path: Path) -> None:
    from clipdex.retrieval.models import save_local_dir

    lm = load_model(resolve_spec(str(tiny_hf_model_dir)), "cpu")
    cfg = read_local_config(tiny_hf_model_dir)
    out = save_local_dir(lm.model, cfg["model_cfg"], cfg["preprocess_cfg"], tmp_path / "copy", lm.tokenizer)
    assert {"config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    again = load_model(resolve_spec(str(out)), "cpu")
    assert np.abs(encode_texts(again, TEXTS) - encode_texts(lm, TEXTS)).max() <= 1e-6
    with pytest.raises(ModelError, match="needs its tokenizer"):
        save_local_dir(lm.model, cfg["model_cfg"], cfg["preprocess_cfg"], tmp_path / "no-tok")
