"""Export an open_clip model's two towers to ONNX, checked against torch before they are kept.

The graphs output unit vectors (the normalisation is inside), so either runtime's vectors go into
the same index. A folder is written whole into a temporary sibling and renamed into place: a reader
sees either no graphs or complete, verified ones. Torch is needed here, once per model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipdex.errors import ModelError
from clipdex.retrieval.hf_text import tokenizer_record
from clipdex.retrieval.models import quiet_logging
from clipdex.retrieval.onnx import preprocess as pp
from clipdex.retrieval.onnx import tokenizer as tk
from clipdex.retrieval.onnx import twins
from clipdex.retrieval.onnx.encoder import FORMAT, MANIFEST, graph_name

OPSET = 17
MIN_COSINE = 0.99999  # the contract: fp32 vectors from either runtime are interchangeable
MAX_PIXEL_DIFF = 1e-5
MIN_INT8_OVERLAP = 0.9  # top-10 neighbours on the user's pictures that int8 must keep, unless forced
PROBE_TEXTS = [
    "a photo of a dog on a beach", "", "Naïve CAFÉ — déjà vu!!", "東京の夜景と富士山",
    "emoji 🐶🏖️ and <end_of_text>", "(<end_of_text>)", "&amp; html &lt;b&gt;", "海边奔跑的狗 a dog 🐶",
    "<s> </s> <pad> [SEP] [CLS] <mask>", "ｆｕｌｌ ｗｉｄｔｈ １２３ 한국어",
    "tabs\tand\nnew lines", "It'S 123,456.78 they'RE", " ".join(["long"] * 120),
]  # fmt: skip

Progress = Callable[[str], None]


class ExportError(ModelError):
    """The model cannot be run by ONNX Runtime here (said in one line; the caller may use torch)."""


class Int8Refused(ModelError):
    """int8 changes too many of the user's nearest neighbours (said with the figures)."""


def probe_images(size: tuple[int, int]) -> list[Image.Image]:
    """Seeded pictures of odd shapes, around the model's input size, for checking transforms and graphs."""
    rng = np.random.default_rng(0)
    h, w = size
    shapes = [(h, w), (h * 2 + 1, w * 3), (max(1, h // 3), w * 2), (h * 5, w + 7), (17, 23)]
    return [Image.fromarray(rng.integers(0, 256, (a, b, 3), dtype=np.uint8), "RGB") for a, b in shapes]


def export_model(
    lm: Any, folder: str | os.PathLike, int8: bool = False, pictures: Sequence[Image.Image] = (),
    on_progress: Progress | None = None, force_int8: bool = False,
) -> dict:  # fmt: skip
    """Write ``folder`` (image/text graphs, tokenizer, manifest) for loaded model ``lm``; return the manifest.

    ``pictures`` (the user's own, optional) join the seeded probes in every check. ``int8`` adds
    dynamically quantised graphs beside the fp32 ones, with their agreement figures in the manifest:
    on ``pictures``, the mean cosine to fp32 and how many of each picture's 10 nearest neighbours
    (among the pictures) int8 keeps; below `MIN_INT8_OVERLAP` it refuses (`Int8Refused`) unless
    ``force_int8``. Nothing is written when it refuses.
    """
    say = on_progress or (lambda _msg: None)
    folder = Path(folder)
    twin_tok, steps = _twins(lm)
    images = [*probe_images(lm.image_size), *pictures]
    _check_preprocess(lm, steps, images)
    _check_tokenizer(lm, twin_tok)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        pixels = np.stack([pp.Preprocess(steps)(im) for im in images])
        tokens = twin_tok(PROBE_TEXTS)
        say("exporting the image tower to ONNX")
        _export_tower(lm, "image", pixels, tmp)
        say("exporting the text tower to ONNX")
        _export_tower(lm, "text", tokens, tmp)
        checks = {"image": _agreement(lm, "image", pixels, tmp / graph_name("image", "fp32")),
                  "text": _agreement(lm, "text", tokens, tmp / graph_name("text", "fp32"))}  # fmt: skip
        for tower, cos in checks.items():
            if cos < MIN_COSINE:
                raise ExportError(
                    f"model {lm.spec}: the exported {tower} tower differs from torch "
                    f"(cosine {cos:.6f} < {MIN_COSINE})"
                )
        manifest = {
            "format": FORMAT, "model": str(lm.spec), "embed_dim": int(lm.embed_dim),
            "image_size": list(lm.image_size), "preprocess": steps, "tokenizer": twin_tok.save(tmp),
            "tokenizer_record": tokenizer_record(lm.tokenizer),
            "opset": OPSET, "fp32_min_cosine": checks, "precisions": ["fp32"],
        }  # fmt: skip
        if int8:
            say("quantising both towers to int8")
            manifest["int8"] = _quantise(lm, tmp, pixels, tokens)
            user = pixels[len(pixels) - len(pictures) :] if pictures else pixels
            manifest["int8"]["pictures"] = figures = int8_agreement(
                _run(tmp / graph_name("image", "fp32"), user), _run(tmp / graph_name("image", "int8"), user)
            )
            whose = "of your pictures" if pictures else "probe pictures"
            say(
                f"int8 against fp32 on {figures['n']} {whose}: top-{figures['k']} overlap "
                f"{figures['overlap']:.3f}, mean cosine {figures['mean_cosine']:.5f}"
            )
            if figures["overlap"] < MIN_INT8_OVERLAP and not force_int8:
                raise Int8Refused(
                    f"int8 keeps only {figures['overlap']:.0%} of the top-{figures['k']} neighbours of your "
                    f"pictures (< {MIN_INT8_OVERLAP:.0%}); nothing was changed (keep fp32, or force it "
                    "with --force-int8)"
                )
            manifest["precisions"].append("int8")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        _replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _twins(lm: Any) -> tuple[Any, list[dict]]:
    try:
        return twins.twin_of(lm.tokenizer), pp.describe(lm.preprocess)
    except (tk.UnsupportedTokenizer, pp.UnsupportedPreprocess) as e:
        raise ExportError(f"model {lm.spec} cannot run on ONNX Runtime: {e}") from e


def _check_preprocess(lm: Any, steps: list[dict], images: Sequence[Image.Image]) -> None:
    twin = pp.Preprocess(steps)
    for im in images:
        diff = float(np.abs(lm.preprocess(im).numpy() - twin(im)).max())
        if diff > MAX_PIXEL_DIFF:
            raise ExportError(f"model {lm.spec}: torch-free preprocessing differs by {diff:.2g}")


def _check_tokenizer(lm: Any, twin: Any) -> None:
    if not np.array_equal(lm.tokenizer(PROBE_TEXTS).numpy(), twin(PROBE_TEXTS)):
        raise ExportError(f"model {lm.spec}: the torch-free tokenizer's ids differ from open_clip's")


def _tower_module(model: Any, tower: str) -> Any:
    """One tower as a module whose output is the unit vector clipdex stores (torch is imported lazily)."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feats = self.model.encode_image(x) if tower == "image" else self.model.encode_text(x)
            return torch.nn.functional.normalize(feats.float(), dim=-1)

    return Tower().eval()


def _export_tower(lm: Any, tower: str, example: np.ndarray, folder: Path) -> None:
    import torch

    model = lm.model
    if next(model.parameters()).device.type != "cpu":  # export a CPU copy: the graph must not pin a device
        import copy

        model = copy.deepcopy(model).cpu()
    name = "pixels" if tower == "image" else "tokens"
    # nn.MultiheadAttention's fused fast path (taken under no_grad or with frozen weights) has no ONNX
    # op: it is switched off while tracing.
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha else None
    if mha:
        mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings are about shapes we make dynamic
            _trace(torch, _tower_module(model, tower), example[:2], folder / graph_name(tower, "fp32"), name)
    except Exception as e:  # an operator without an ONNX form, mostly: the user needs one line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExportError(f"model {lm.spec}: the {tower} tower cannot be exported to ONNX: {first}") from e
    finally:
        if mha:
            mha.set_fastpath_enabled(fast)


def _trace(torch: Any, module: Any, example: np.ndarray, path: Path, name: str) -> None:
    # dynamo=False: the TorchScript tracer (no onnxscript needed), batch axis dynamic
    torch.onnx.export(
        module, (torch.from_numpy(example),), str(path),
        input_names=[name], output_names=["vectors"], opset_version=OPSET,
        dynamic_axes={name: {0: "batch"}, "vectors": {0: "batch"}}, dynamo=False,
    )  # fmt: skip


def _torch_vectors(lm: Any, tower: str, x: np.ndarray) -> np.ndarray:
    import torch

    device = next(lm.model.parameters()).device
    with torch.inference_mode():
        t = torch.from_numpy(x).to(device)
        feats = lm.model.encode_image(t) if tower == "image" else lm.model.encode_text(t)
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _agreement(lm: Any, tower: str, x: np.ndarray, path: Path) -> float:
    """The worst cosine between the graph's vectors and torch's for the same inputs."""
    return float(np.min(np.sum(_run(path, x) * _torch_vectors(lm, tower, x), axis=1)))


def _quantise(lm: Any, folder: Path, pixels: np.ndarray, tokens: np.ndarray) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = {}
    for tower, x in (("image", pixels), ("text", tokens)):
        src, dst = folder / graph_name(tower, "fp32"), folder / graph_name(tower, "int8")
        with quiet_logging():  # it logs advice about offline pre-processing on the root logger
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        cos = np.sum(_run(dst, x) * _run(src, x), axis=1)
        out[tower] = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
    return out


def int8_agreement(fp32: np.ndarray, int8: np.ndarray, k: int = 10) -> dict:
    """How close int8 vectors stay to fp32 ones of the same pictures: the mean cosine, and the mean
    share of each picture's ``k`` nearest neighbours among the others (fewer when there are fewer
    pictures) that int8 keeps (1.0 with a single picture: nothing to rank)."""
    n = len(fp32)
    k = max(0, min(k, n - 1))
    cos = float(np.mean(np.sum(fp32 * int8, axis=1))) if n else 1.0
    if k == 0:
        return {"n": n, "k": k, "overlap": 1.0, "mean_cosine": cos}

    def neighbours(v: np.ndarray) -> np.ndarray:
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    a, b = neighbours(fp32), neighbours(int8)
    overlap = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))
    return {"n": n, "k": k, "overlap": overlap, "mean_cosine": cos}


def _replace_dir(tmp: Path, folder: Path) -> None:
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if folder.exists():  # a re-export (int8 added): move the old one aside, then swap
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
