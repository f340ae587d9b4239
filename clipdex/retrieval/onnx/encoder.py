"""Encode texts and pictures with exported graphs on ONNX Runtime: no torch in this process.

An ``OnnxEncoder`` opens a graph folder written by ``export`` and gives unit float32 vectors, like
torch's path. Each tower's session is created on first use (a text search never loads the image
graph) and is shared by threads: ONNX Runtime's ``run`` is thread-safe.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipdex.errors import ModelError
from clipdex.retrieval.encoders import Batches, TextBatches, default_batch_size, prefetched_batches
from clipdex.retrieval.onnx.preprocess import Preprocess
from clipdex.retrieval.onnx.tokenizer import UnsupportedTokenizer
from clipdex.retrieval.onnx.twins import load_tokenizer

FORMAT = 1
MANIFEST = "onnx.json"
PRECISIONS = ("fp32", "int8")


def graph_name(tower: str, precision: str) -> str:
    return f"{tower}.onnx" if precision == "fp32" else f"{tower}.{precision}.onnx"


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The folder's manifest, or None where there are no complete graphs of a format we read."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def providers(device: str = "cpu", precision: str = "fp32") -> list[str]:
    """CUDA where asked for, installed (onnxruntime-gpu) and fp32; else the CPU."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device.startswith("cuda") and precision == "fp32" and cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEncoder:
    """Texts and pictures -> (N, D) unit float32 vectors through a graph folder."""

    def __init__(self, folder: str | os.PathLike, precision: str = "fp32", device: str = "cpu",
                 threads: int | None = None):  # fmt: skip
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if manifest is None:
            raise ModelError(f"{self.folder} holds no exported ONNX graphs")
        have = manifest.get("precisions", [])
        if precision not in have:
            raise ModelError(f"{self.folder} has no {precision} graphs (it has {', '.join(have) or 'none'})")
        self.manifest, self.precision, self.threads = manifest, precision, threads
        self.providers = providers(device, precision)
        self.embed_dim = int(manifest["embed_dim"])
        self.image_size = tuple(manifest["image_size"])
        self.preprocess = Preprocess(manifest["preprocess"])
        try:
            self.tokenizer = load_tokenizer(self.folder, manifest["tokenizer"])
        except (UnsupportedTokenizer, OSError, ValueError, KeyError) as e:
            raise ModelError(f"{self.folder}: {e}") from e
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def runtime(self) -> str:
        """What runs the graphs, for ``info`` and ``--debug``: e.g. ``onnx (CPUExecutionProvider, int8)``."""
        return f"onnx ({self.providers[0]}, {self.precision})"

    def session(self, tower: str) -> Any:
        with self._lock:
            if tower not in self._sessions:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                if self.threads:
                    opts.intra_op_num_threads = self.threads
                path = self.folder / graph_name(tower, self.precision)
                self._sessions[tower] = ort.InferenceSession(str(path), opts, providers=self.providers)
            return self._sessions[tower]

    def _run(self, tower: str, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        sess = self.session(tower)
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """(B, context_length) token ids -> (B, D) unit vectors."""
        return self._run("text", np.ascontiguousarray(tokens, dtype=np.int64))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        out = [np.zeros((0, self.embed_dim), np.float32)]
        for start in range(0, len(texts), batch_size):
            out.append(self.encode_tokens(self.tokenizer(list(texts[start : start + batch_size]))))
        return np.concatenate(out)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) preprocessed float32 pixels -> (B, D) unit vectors."""
        return self._run("image", np.ascontiguousarray(pixels, dtype=np.float32))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        out = [np.zeros((0, self.embed_dim), np.float32)]
        for start in range(0, len(images), batch_size):
            out.append(self.encode_pixels(self.preprocess.batch(list(images[start : start + batch_size]))))
        return np.concatenate(out)

    # ---- the `clipdex.retrieval.encoders.Encoder` interface (the pipelines' view) ----------
    encode_pictures = encode_images

    def default_batch_size(self) -> int:
        return default_batch_size("cuda" if self.providers[0].startswith("CUDA") else "cpu")

    def iter_encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> TextBatches:
        for start in range(0, len(texts), batch_size):
            yield start, self.encode_tokens(self.tokenizer(list(texts[start : start + batch_size])))

    def embed_files(
        self, items: Iterable, path_of: Callable[[Any], bytes | str | None], *, batch_size: int,
        workers: int, draft_to: tuple[int, int] | None, on_info: Callable | None = None,
        on_image: Callable | None = None,
    ) -> Batches:  # fmt: skip
        """Files -> ``(encoded, failed, done)`` per batch (see `clipdex.retrieval.encoders`)."""
        from clipdex.retrieval.decode import DecodeError, load_and_preprocess

        def decode(item: Any) -> np.ndarray:
            path = path_of(item)
            if path is None:
                raise DecodeError("no file to decode (imported vector)")
            report = (lambda info: on_info(item, info)) if on_info is not None else None
            see = (lambda picture: on_image(item, picture)) if on_image is not None else None
            return load_and_preprocess(path, self.preprocess, draft_to, report, see)

        return prefetched_batches(
            items, decode, lambda pixels: self.encode_pixels(np.stack(pixels)), batch_size=batch_size,
            workers=workers,
        )  # fmt: skip
