"""The one place that owns model loading: spec parsing, normalisation, devices, local-dir models.

A model spec is what open_clip accepts (an architecture name plus a pretrained tag or checkpoint
file, ``hf-hub:ORG/REPO``, ``local-dir:PATH``) or a plain directory in the local-dir format.
Specs are normalised before they are stored in a library, so the same model always compares equal.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipdex.errors import ModelError
from clipdex.retrieval import hf_text

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
OFFLINE_HINT = (
    "to work offline, use a model in local-dir format (--model local-dir:PATH, "
    "see `clipdex model init`) or download it once while online"
)


@dataclass(frozen=True)
class ModelSpec:
    """A normalised model identity: open_clip ``name`` plus ``pretrained`` (tag or absolute file)."""

    name: str
    pretrained: str | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.pretrained})" if self.pretrained else self.name

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls(**json.loads(text))

    def to_arg(self) -> str:
        """The form ``--model`` accepts: ``ARCH@TAG``, ``local-dir:/abs``, ``hf-hub:ORG/REPO``."""
        return f"{self.name}@{self.pretrained}" if self.pretrained else self.name

    @property
    def local_dir(self) -> Path | None:
        return Path(self.name[len(LOCAL_DIR) :]) if self.name.startswith(LOCAL_DIR) else None


def _open_clip():
    import open_clip  # heavy: imported only where a model is really needed

    return open_clip


def resolve_spec(model: str | None = None, pretrained: str | None = None) -> ModelSpec:
    """Normalise a user's ``--model``/``--pretrained`` (or ``$CLIPDEX_MODEL``) into a ModelSpec.

    ``ARCH@TAG`` (``ViT-B-32@laion2b_s34b_b79k``) is the same as ``ARCH`` with ``--pretrained TAG``.
    """
    if model is None:
        model = os.environ.get("CLIPDEX_MODEL") or DEFAULT_MODEL
        pretrained = pretrained or os.environ.get("CLIPDEX_PRETRAINED") or None
    model = model.strip()
    if not model:
        raise ModelError("empty model name")
    name, at, tag = model.partition("@")
    if at and not model.startswith((LOCAL_DIR, HF_HUB)) and os.sep not in name and not os.path.isdir(model):
        if not tag.strip():
            raise ModelError(f"empty pretrained tag after '@' in '{model}'")
        if pretrained is not None and pretrained != tag.strip():
            raise ModelError(f"--model {model} and --pretrained {pretrained} name different weights")
        model, pretrained = name.strip(), tag.strip()
    if model.startswith(HF_HUB):
        if not model[len(HF_HUB) :].strip("/"):
            raise ModelError("empty repository after 'hf-hub:'")
        return ModelSpec(model)
    if model.startswith(LOCAL_DIR) or _looks_like_path(model):
        path = Path(model[len(LOCAL_DIR) :] if model.startswith(LOCAL_DIR) else model).expanduser()
        if not (path / CONFIG_NAME).is_file():
            raise ModelError(f"{path} is not a local-dir model (no {CONFIG_NAME} in it)")
        return ModelSpec(LOCAL_DIR + str(path.resolve()))
    open_clip = _open_clip()
    arch = model.replace("/", "-")
    if arch not in open_clip.list_models():
        raise ModelError(f"unknown model '{model}': not an open_clip architecture or model dir")
    if pretrained is None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if arch == DEFAULT_MODEL:
            pretrained = DEFAULT_PRETRAINED
        elif tags:
            pretrained = tags[0]
        else:
            raise ModelError(f"model '{arch}' has no published weights; give --pretrained CHECKPOINT")
    elif os.path.exists(pretrained) or os.sep in pretrained:
        if not os.path.isfile(pretrained):
            raise ModelError(f"checkpoint file not found: {pretrained}")
        pretrained = str(Path(pretrained).resolve())
    elif pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ModelError(f"unknown pretrained tag '{pretrained}' for {arch} (known: {tags})")
    return ModelSpec(arch, pretrained)


def _looks_like_path(model: str) -> bool:
    return os.sep in model or model.startswith((".", "~")) or os.path.isdir(model)


def pick_device(device: str = "auto") -> str:
    """``auto`` → ``$CLIPDEX_DEVICE`` if set, else cuda, then mps, then cpu; an explicit device
    that is absent is an error."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        device = (os.environ.get("CLIPDEX_DEVICE") or "auto").strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda asked for, but no CUDA GPU is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError("--device mps asked for, but MPS is not available")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ModelError(f"unknown device '{device}' (use auto, cpu, cuda or mps)")
    return device


@contextmanager
def quiet_logging(level: int = logging.ERROR) -> Iterator[None]:
    """open_clip logs warnings on the root logger (e.g. "no weights found"); keep stderr clean."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(level, old))
    try:
        yield
    finally:
        root.setLevel(old)


_INIT_FUNCS = (
    "normal_", "uniform_", "trunc_normal_", "constant_", "zeros_", "ones_", "orthogonal_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
)  # fmt: skip


@contextmanager
def skip_random_init() -> Iterator[None]:
    """Make torch.nn.init a no-op while a model whose weights are loaded next is built.

    open_clip builds the model with random weights, then overwrites every one of them from the
    checkpoint (strict load). The random init is pure waste: ~0.7 s of a ViT-B-32 cold start.
    """
    import torch

    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCS}
    for name in _INIT_FUNCS:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _has_weights(spec: ModelSpec) -> bool:
    if spec.local_dir is None:
        return True  # a pretrained tag, checkpoint file or hf-hub repo always carries weights
    return any(spec.local_dir.glob(pattern) for pattern in ("*.safetensors", "*.bin", "*.pth"))


@dataclass
class LoadedModel:
    """An open_clip model ready for inference, with its own transforms and tokenizer."""

    spec: ModelSpec
    model: Any
    preprocess: Any  # open_clip's validation transform: PIL RGB image -> tensor
    tokenizer: Any
    device: str
    embed_dim: int
    image_size: tuple[int, int]


def load_model(spec: ModelSpec, device: str = "auto") -> LoadedModel:
    """Load a model through open_clip's own factory (weights, transforms, tokenizer)."""
    device = pick_device(device)
    open_clip = _open_clip()
    if spec.local_dir is not None and not (spec.local_dir / CONFIG_NAME).is_file():
        raise ModelError(f"model directory {spec.local_dir} is missing or has no {CONFIG_NAME}")
    model_cfg = _model_config(spec)
    if spec.local_dir is not None and model_cfg is not None:
        hf_text.check_local_dir(spec.local_dir, model_cfg)
    elif hf_text.hf_names(model_cfg):
        hf_text.require_transformers()
    _check_reachable_or_cached(spec, model_cfg)
    try:
        with quiet_logging(), skip_random_init() if _has_weights(spec) else nullcontext():
            model, _, val_pp = open_clip.create_model_and_transforms(
                spec.name, pretrained=spec.pretrained, device=device,
                **hf_text.load_kwargs(spec.local_dir, model_cfg),
            )  # fmt: skip
            tokenizer = open_clip.get_tokenizer(spec.name)
    except ModelError:
        raise
    except Exception as e:  # open_clip raises many types; the user needs one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if _offline():
            raise ModelError(f"cannot load model {spec}: the model hub is unreachable; {OFFLINE_HINT}") from e
        raise ModelError(f"cannot load model {spec}: {msg}") from e
    model.eval()
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return LoadedModel(
        spec=spec,
        model=model,
        preprocess=val_pp,
        tokenizer=tokenizer,
        device=device,
        embed_dim=_embed_dim(model),
        image_size=size,
    )


def _model_config(spec: ModelSpec) -> dict | None:
    """The model config open_clip will build from, where it can be read without a download."""
    if spec.local_dir is not None:
        try:
            return read_local_config(spec.local_dir).get("model_cfg")
        except (OSError, ValueError):
            return None  # open_clip says what is wrong with it
    if spec.name.startswith(HF_HUB):
        return None
    return _open_clip().get_model_config(spec.name)


def _embed_dim(model: Any) -> int:
    """The shared embedding width, read from the projections where the model has them.

    CLIP keeps ``text_projection`` (a matrix) on the model; CustomTextCLIP (SigLIP, timm and HF
    towers) keeps it inside ``model.text``, as a matrix or an ``nn.Linear``. Otherwise one tiny
    text is encoded, on the model's own device.
    """
    for owner in (model, getattr(model, "text", None)):
        proj = getattr(owner, "text_projection", None)
        if getattr(proj, "out_features", None):
            return int(proj.out_features)
        if proj is not None and getattr(proj, "ndim", 0) == 2:
            return int(proj.shape[1])
    output_dim = getattr(model.visual, "output_dim", None)
    if output_dim:
        return int(output_dim)
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        return int(model.encode_text(torch.zeros(1, 8, dtype=torch.long, device=device)).shape[-1])


def _offline(host: str = "huggingface.co") -> bool:
    try:
        socket.setdefaulttimeout(3)
        socket.getaddrinfo(host, 443)
        return False
    except OSError:
        return True
    finally:
        socket.setdefaulttimeout(None)


def _check_reachable_or_cached(spec: ModelSpec, model_cfg: dict | None = None) -> None:
    """Fail fast with one line when weights (or a Hugging Face text tower's config and tokenizer)
    must be downloaded but the hub is unreachable.

    Without this, huggingface_hub retries for most of a minute before giving up.
    """
    weights = spec.local_dir is not None or (spec.pretrained and os.path.isfile(spec.pretrained))
    if not weights and not _is_cached(spec) and _offline():
        raise ModelError(
            f"model {spec} is not in the local cache and the model hub is unreachable; {OFFLINE_HINT}"
        )
    missing = hf_text.missing_hub_files(model_cfg)
    if missing and _offline():
        repos = ", ".join(missing)
        raise ModelError(
            f"model {spec} needs the text tower's config and tokenizer of {repos} from Hugging Face, not "
            f"in the local cache, and the hub is unreachable; download once online "
            f"(`huggingface-cli download {missing[0]}`) or use a local-dir model"
        )


def _is_cached(spec: ModelSpec) -> bool:
    from huggingface_hub import try_to_load_from_cache

    open_clip = _open_clip()
    if spec.name.startswith(HF_HUB):
        repo = spec.name[len(HF_HUB) :]
        return isinstance(try_to_load_from_cache(repo, CONFIG_NAME), str)
    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained or "")
    parts = cfg.get("hf_hub", "").strip("/").split("/")
    if len(parts) >= 2:
        repo_id = "/".join(parts[:2])
        names = parts[2:3] + ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(repo_id, n), str) for n in names)
    url = cfg.get("url", "")
    if url:  # open_clip's legacy URL cache
        cache = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        return cache.is_file()
    return False


def save_local_dir(
    model: Any, model_cfg: dict, preprocess_cfg: dict, out: str | Path, tokenizer: Any = None
) -> Path:
    """Write ``model`` in open_clip's local-dir format, atomically (temp dir, then rename).

    A Hugging Face text tower's config and ``tokenizer`` (the model's open_clip tokenizer) are
    written into the folder too, so it is self-contained.
    """
    from safetensors.torch import save_file

    out = Path(out).expanduser().resolve()
    if out.exists() and not (out / CONFIG_NAME).is_file() and (not out.is_dir() or any(out.iterdir())):
        # Only ever replace a model directory: never a user's folder given by mistake.
        raise ModelError(f"{out} exists and is not a model directory; choose another output")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME))
        if hf_text.is_hf_tower(model):
            if tokenizer is None:
                raise ModelError("saving a model with a Hugging Face text tower needs its tokenizer")
            model_cfg = hf_text.write_text_files(model, tokenizer, tmp, model_cfg)
        config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model dir is an ordinary folder
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_local_config(path: str | Path) -> dict:
    """The ``{"model_cfg", "preprocess_cfg"}`` of a local-dir model."""
    return json.loads((Path(path) / CONFIG_NAME).read_text(encoding="utf-8"))
