"""What encodes: one interface over the two runtimes, so the pipelines don't care which runs.

`TorchEncoder` wraps a loaded open_clip model (`clipdex.retrieval.embed`); `OnnxEncoder`
(`clipdex.retrieval.onnx.encoder`) runs exported graphs on ONNX Runtime. Both give unit float32
vectors in the same space (cosine ≥ 0.99999 for fp32), and both feed files through the ordered,
bounded prefetch, so decoding overlaps encoding either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from clipdex.retrieval.decode import PhotoInfo

T = TypeVar("T")
TextBatches = Iterator[tuple[int, np.ndarray]]  # (start, vectors) per batch of texts
Batches = Iterator[tuple[list[tuple[Any, np.ndarray]], list[tuple[Any, BaseException]], int]]


CPU_BATCH, CUDA_BATCH = 32, 256


def default_batch_size(device: str) -> int:
    """Images per encoder batch: ``$CLIPDEX_BATCH_SIZE`` if set, else 32 on CPU and MPS (bigger
    batches gain nothing there) and 256 on CUDA (a GPU needs large batches to be kept busy)."""
    raw = os.environ.get("CLIPDEX_BATCH_SIZE", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return CUDA_BATCH if device.startswith("cuda") else CPU_BATCH


class Encoder(Protocol):
    """Texts, pictures and image files -> (N, D) unit float32 vectors."""

    runtime: str  # for info and --debug: "torch (cpu)", "onnx (CPUExecutionProvider, int8)"
    embed_dim: int
    image_size: tuple[int, int]

    def default_batch_size(self) -> int: ...

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray: ...

    def iter_encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> TextBatches:
        """``(start, vectors)`` per batch of ``texts``, in order."""
        ...

    def encode_pictures(self, pictures: Sequence[Any]) -> np.ndarray:
        """Decoded pictures (PIL) -> vectors."""
        ...

    def embed_files(
        self, items: Iterable[T], path_of: Callable[[T], bytes | str | None], *, batch_size: int,
        workers: int, draft_to: tuple[int, int] | None, on_info: Callable[[T, PhotoInfo], None] | None = None,
        on_image: Callable[[T, Any], None] | None = None,
    ) -> Batches:  # fmt: skip
        """Decode files in parallel and encode them in batches: ``(encoded, failed, done)`` per
        batch, as `clipdex.retrieval.embed.embed_image_files` documents (``on_image`` too)."""
        ...


class TorchEncoder:
    """open_clip's own ``encode_image``/``encode_text`` on torch (CPU, CUDA with AMP, MPS)."""

    def __init__(self, lm: Any):
        self.lm = lm
        self.spec = lm.spec
        self.embed_dim = lm.embed_dim
        self.image_size = tuple(lm.image_size)
        self.runtime = f"torch ({lm.device})"

    def default_batch_size(self) -> int:
        return default_batch_size(self.lm.device)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        from clipdex.retrieval.embed import encode_texts

        return encode_texts(self.lm, texts, batch_size)

    def iter_encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> TextBatches:
        from clipdex.retrieval.embed import iter_encode_texts

        return iter_encode_texts(self.lm, texts, batch_size)

    def encode_pictures(self, pictures: Sequence[Any]) -> np.ndarray:
        if not pictures:
            return np.zeros((0, self.embed_dim), np.float32)
        import torch

        from clipdex.retrieval.embed import encode_image_batch

        return encode_image_batch(self.lm, torch.stack([self.lm.preprocess(p) for p in pictures]))

    def embed_files(
        self, items: Iterable[T], path_of: Callable[[T], bytes | str | None], *, batch_size: int,
        workers: int, draft_to: tuple[int, int] | None, on_info: Callable[[T, PhotoInfo], None] | None = None,
        on_image: Callable[[T, Any], None] | None = None,
    ) -> Batches:  # fmt: skip
        from clipdex.retrieval.embed import embed_image_files

        return embed_image_files(
            self.lm, items, path_of, batch_size=batch_size, workers=workers, draft_to=draft_to,
            on_info=on_info, on_image=on_image,
        )  # fmt: skip


def prefetched_batches(
    items: Iterable[T], decode: Callable[[T], Any], encode: Callable[[list[Any]], np.ndarray], *,
    batch_size: int, workers: int,
) -> Batches:  # fmt: skip
    """Decode ``items`` in ``workers`` threads (ordered, bounded prefetch) and ``encode`` them
    ``batch_size`` at a time: the plain pipeline of a runtime that encodes on the CPU and releases
    the GIL meanwhile (ONNX Runtime), so the threads decode the next files while a batch runs."""
    from clipdex.retrieval.prefetch import ordered_prefetch

    ok: list[T] = []
    pixels: list[Any] = []
    failed: list[tuple[T, BaseException]] = []
    done = 0

    def flush() -> tuple[list[tuple[T, np.ndarray]], list[tuple[T, BaseException]], int]:
        vecs = encode(pixels) if pixels else []
        return list(zip(ok, vecs)), failed, done

    for item, result in ordered_prefetch(decode, items, workers, ahead=batch_size * 2):
        done += 1
        if isinstance(result, BaseException):
            failed.append((item, result))
            continue
        ok.append(item)
        pixels.append(result)
        if len(ok) >= batch_size:
            yield flush()
            ok, pixels, failed = [], [], []
    if ok or failed:
        yield flush()
