"""Models whose text tower is a Hugging Face transformer (``hf_model_name`` in the text config).

open_clip builds such a tower with ``AutoConfig.from_pretrained(hf_model_name)`` and, for a
local-dir model, always reads the tokenizer from the model folder itself. clipdex writes these
folders self-contained: the transformer's ``config.json`` and the tokenizer files lie beside
``open_clip_config.json`` and ``hf_model_name`` is ``"."``. transformers resolves a relative name
against the working directory, so clipdex resolves it against the model folder before open_clip
sees it (plain open_clip loads the folder from inside it). Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from clipdex.errors import ModelError

HF_CONFIG = "config.json"
SELF = "."  # hf_model_name / hf_tokenizer_name of a self-contained folder
# any one of these lets transformers build the tokenizer; tokenizer.json is what the ONNX path needs
TOKENIZER_FILES = (
    "tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.txt", "vocab.json",
)  # fmt: skip
INSTALL_HINT = "pip install 'clipdex[multilingual]'"


def hf_names(model_cfg: dict | None) -> tuple[str, str] | None:
    """(hf_model_name, hf_tokenizer_name) of a config with a Hugging Face text tower, else None."""
    text = (model_cfg or {}).get("text_cfg") or {}
    name = text.get("hf_model_name")
    if not name:
        return None
    return str(name), str(text.get("hf_tokenizer_name") or name)


def require_transformers() -> None:
    """One line instead of open_clip's deep ImportError when transformers is not installed."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise ModelError(f"this model's text tower is a Hugging Face transformer: {INSTALL_HINT}")


def _local(name: str, folder: Path) -> Path | None:
    """``name`` as a folder holding a transformer config: relative to the model folder, or absolute."""
    path = Path(name).expanduser()
    path = path if path.is_absolute() else folder / path
    return path.resolve() if (path / HF_CONFIG).is_file() else None


def check_local_dir(folder: Path, model_cfg: dict) -> None:
    """A local-dir model with an HF text tower: its tokenizer and transformer config must be there.

    open_clip reads the tokenizer from the folder whatever ``hf_tokenizer_name`` says; a missing file
    surfaces from transformers as a long, misleading error, so it is named here first.
    """
    names = hf_names(model_cfg)
    if names is None:
        return
    require_transformers()
    model_name, tokenizer_name = names
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        origin = "" if tokenizer_name == SELF else f" of '{tokenizer_name}'"
        raise ModelError(
            f"model {folder} has no tokenizer: copy the tokenizer files{origin} (tokenizer.json, or "
            f"{', '.join(TOKENIZER_FILES[1:])} with tokenizer_config.json) into that folder"
        )
    if _local(model_name, folder) is None and _looks_local(model_name):
        raise ModelError(
            f"model {folder}: the text tower's {HF_CONFIG} is missing (hf_model_name '{model_name}'); "
            f"put the transformer's {HF_CONFIG} there"
        )


def _looks_local(name: str) -> bool:
    # a hub id is NAME or ORG/NAME; anything else names a folder
    return name.startswith((".", "/", "~", os.sep)) or name.count("/") > 1


def load_kwargs(folder: Path | None, model_cfg: dict | None) -> dict:
    """Extra keyword arguments for ``open_clip.create_model_and_transforms`` of this model.

    A local text-tower folder named relatively is given to open_clip as an absolute path, through
    its ``text_cfg`` override (the saved config stays relative, so the folder can be moved).
    """
    names = hf_names(model_cfg)
    if names is None or folder is None:
        return {}
    local = _local(names[0], folder)
    if local is None:
        return {}
    # weights come from the folder's checkpoint: no pretrained transformer weights are looked for
    return {"text_cfg": {**model_cfg["text_cfg"], "hf_model_name": str(local), "hf_model_pretrained": False}}


def missing_hub_files(model_cfg: dict | None) -> list[str]:
    """Hub repositories the text tower reads that are not in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    names = hf_names(model_cfg)
    if names is None:
        return []
    missing = []
    for repo, files in ((names[0], (HF_CONFIG,)), (names[1], ("tokenizer_config.json", *TOKENIZER_FILES))):
        if _looks_local(repo) or Path(repo).is_dir():
            continue
        if not any(isinstance(try_to_load_from_cache(repo, f), str) for f in files) and repo not in missing:
            missing.append(repo)
    return missing


def is_hf_tower(model: Any) -> bool:
    """Whether a built open_clip model's text tower is open_clip's ``HFTextEncoder``."""
    text = getattr(model, "text", None)
    return text is not None and hasattr(text, "transformer") and hasattr(text, "config")


def write_text_files(model: Any, tokenizer: Any, folder: Path, model_cfg: dict) -> dict:
    """Write the transformer config and the tokenizer into ``folder``; return the model config to
    save beside them (``hf_model_name`` pointing at the folder itself)."""
    if not is_hf_tower(model):
        return model_cfg
    model.text.config.save_pretrained(str(folder))
    save_tokenizer(tokenizer, folder)
    text = {**model_cfg["text_cfg"], "hf_model_name": SELF}
    text.setdefault("hf_tokenizer_name", SELF)  # any value: open_clip reads the folder's own tokenizer
    _strip_paths(folder / HF_CONFIG)
    return {**model_cfg, "text_cfg": text}


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """open_clip's ``HFTokenizer`` (or a transformers tokenizer) -> tokenizer files in ``folder``."""
    inner = getattr(tokenizer, "tokenizer", tokenizer)
    if not hasattr(inner, "save_pretrained"):
        raise ModelError(f"cannot save the text tower's tokenizer ({type(tokenizer).__name__})")
    inner.save_pretrained(str(folder))
    cfg_path = folder / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if cfg.get("tokenizer_class") == "TokenizersBackend":
            # transformers 5's name for a generic fast tokenizer; 4.x knows the older alias
            cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg.pop("name_or_path", None)
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _strip_paths(path: Path) -> None:
    """Drop the absolute source path transformers may keep in a saved config (``_name_or_path``)."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.pop("_name_or_path", None) is not None:
        path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def copy_text_files(src: Path, dst: Path) -> None:
    """Copy a self-contained folder's transformer config and tokenizer files (no weights)."""
    for f in src.iterdir():
        if f.is_file() and (f.name == HF_CONFIG or "token" in f.name or f.name in TOKENIZER_FILES):
            shutil.copy2(f, dst / f.name)


def tokenizer_record(tokenizer: Any) -> dict:
    """What a library records about its model's tokenizer (shown by ``info``)."""
    import hashlib

    inner = getattr(tokenizer, "tokenizer", None)
    context = int(getattr(tokenizer, "context_length", 0) or 0)
    if type(tokenizer).__name__ == "HFTokenizer" and inner is not None:
        backend = getattr(inner, "backend_tokenizer", None)
        digest = hashlib.sha256(backend.to_str().encode()).hexdigest()[:16] if backend is not None else None
        return {"kind": "hf", "class": type(inner).__name__, "vocab_size": len(inner),
                "context_length": context, "sha256": digest}  # fmt: skip
    vocab = getattr(tokenizer, "vocab_size", None) or len(getattr(tokenizer, "encoder", {}) or {})
    return {"kind": type(tokenizer).__name__, "vocab_size": int(vocab or 0), "context_length": context}


def encoder_tokenizer_record(enc: Any) -> str:
    """`tokenizer_record` (as JSON, for the library's meta table) of an Encoder's model: a torch
    encoder's own tokenizer, or what an ONNX graph folder recorded at export."""
    lm = getattr(enc, "lm", None)
    if lm is not None:
        return json.dumps(tokenizer_record(lm.tokenizer), sort_keys=True)
    record = (getattr(enc, "manifest", None) or {}).get("tokenizer_record")
    return json.dumps(record, sort_keys=True) if record else ""
