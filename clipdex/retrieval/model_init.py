"""Writing a new, randomly initialised model (fixed seed) in open_clip's local-dir format.

Built through open_clip's own factory from a local-dir config (a weightless temporary folder:
the very code path that later loads the saved weights), then saved with `save_local_dir`. Tests,
the demo and benchmarks make their small models here; `clipdex model init` is the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from clipdex.errors import ModelError
from clipdex.retrieval import hf_text
from clipdex.retrieval.models import CONFIG_NAME, LOCAL_DIR, _open_clip, quiet_logging, save_local_dir

TEXT_TOWERS = ("clip", "hf")


def init_model(
    arch_or_json: str, out: str | Path, seed: int = 0, text_tower: str = "clip", corpus: str | None = None,
    tokenizer: str | None = None, vocab_size: int | None = None,
) -> Path:  # fmt: skip
    """Create a randomly initialised model (fixed seed) in local-dir format.

    ``arch_or_json`` is an open_clip architecture name, or a JSON file holding either a bare
    model config or ``{"model_cfg": …, "preprocess_cfg": …}``. With ``text_tower="hf"`` the text
    tower is a small transformer (sized by an optional "hf_text_config" object in the JSON) with a
    tokenizer trained on ``corpus`` (a UTF-8 file, one text a line; default: a built-in
    multilingual corpus) or copied from ``tokenizer`` (a tokenizer.json or a tokenizer folder).
    """
    import torch

    if text_tower not in TEXT_TOWERS:
        raise ModelError(f"unknown text tower '{text_tower}' (use {' or '.join(TEXT_TOWERS)})")
    if text_tower != "hf" and (corpus or tokenizer or vocab_size):
        raise ModelError("--corpus, --tokenizer and --vocab-size only apply with --text-tower hf")
    if Path(out).expanduser().exists() and any(Path(out).expanduser().iterdir()):
        raise ModelError(f"{out} already exists and is not empty; choose another --out")
    model_cfg, preprocess_cfg, text_config = _read_config(arch_or_json, need_text=text_tower == "clip")
    open_clip = _open_clip()
    cfg_dir = Path(tempfile.mkdtemp(prefix="clipdex-cfg-"))
    try:
        hf_tok = None
        if text_tower == "hf":
            from clipdex.retrieval import hf_init

            lines = hf_init.read_corpus(corpus) if corpus else None
            model_cfg = hf_init.write_text_tower(
                cfg_dir, model_cfg, text_config, lines, tokenizer, vocab_size or hf_init.DEFAULT_VOCAB
            )
        # open_clip builds from a local-dir config; a weightless temp dir gives a random init
        # through the very code path that later loads the saved weights.
        cfg = {"model_cfg": json.loads(json.dumps(model_cfg)), "preprocess_cfg": preprocess_cfg}
        (cfg_dir / CONFIG_NAME).write_text(json.dumps(cfg), encoding="utf-8")
        torch.manual_seed(seed)
        try:
            with quiet_logging():
                model = open_clip.create_model(
                    LOCAL_DIR + str(cfg_dir), pretrained=None, load_weights=False, pretrained_text=False,
                    **hf_text.load_kwargs(cfg_dir, model_cfg),
                )  # fmt: skip
                if text_tower == "hf":
                    hf_tok = open_clip.get_tokenizer(LOCAL_DIR + str(cfg_dir))
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(
                f"cannot build model from config: {str(e).splitlines()[0] if str(e) else e}"
            ) from e
        full_pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        full_pp.update(preprocess_cfg)
        return save_local_dir(model, model_cfg, full_pp, out, tokenizer=hf_tok)
    finally:
        shutil.rmtree(cfg_dir, ignore_errors=True)


def _read_config(arch_or_json: str, need_text: bool) -> tuple[dict, dict, dict | None]:
    """(model_cfg, preprocess_cfg, hf_text_config) of an architecture name or a JSON file."""
    preprocess_cfg: dict = {}
    text_config = None
    if arch_or_json.endswith(".json") or os.path.isfile(arch_or_json):
        try:
            cfg = json.loads(Path(arch_or_json).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read model config {arch_or_json}: {e}") from e
        if not isinstance(cfg, dict):
            raise ModelError(f"{arch_or_json}: a model config is a JSON object")
        text_config = _pop_text_config(cfg)
        if "model_cfg" in cfg:
            preprocess_cfg = dict(cfg.get("preprocess_cfg") or {})
            cfg = cfg["model_cfg"]
            text_config = (
                _pop_text_config(cfg) if isinstance(cfg, dict) and text_config is None else text_config
            )
        needed = ("vision_cfg", "text_cfg") if need_text else ("vision_cfg",)
        if not isinstance(cfg, dict) or any(k not in cfg for k in needed):
            raise ModelError(f"{arch_or_json}: a model config needs 'embed_dim', 'vision_cfg' and 'text_cfg'")
        return cfg, preprocess_cfg, text_config
    model_cfg = _open_clip().get_model_config(arch_or_json.replace("/", "-"))
    if model_cfg is None:
        raise ModelError(f"unknown architecture '{arch_or_json}' (see open_clip.list_models())")
    return model_cfg, preprocess_cfg, None


def _pop_text_config(cfg: dict) -> Any:
    section = cfg.pop("hf_text_config", None)
    if section is not None and not isinstance(section, dict):
        raise ModelError("'hf_text_config' must be an object of transformers config keys")
    return section
