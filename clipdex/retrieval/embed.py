"""Tensors in, L2-normalised float32 embeddings out — exactly open_clip's encode_* + normalisation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from clipdex.retrieval.decode import DecodeError, PhotoInfo, load_and_preprocess
from clipdex.retrieval.models import LoadedModel
from clipdex.retrieval.prefetch import ordered_prefetch

T = TypeVar("T")


def _autocast(device: str, dtype: torch.dtype | None = None) -> Any:
    # Mixed precision only on CUDA (fp16 unless a caller, e.g. bf16 training, asks for another);
    # on CPU fp32 keeps embeddings equal to open_clip's.
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=dtype or torch.float16)
    return nullcontext()


def stack_pixels(pixels: Sequence[torch.Tensor], device: str) -> torch.Tensor:
    """One (B, 3, H, W) batch; in pinned memory for CUDA, so its copy to the GPU can be asynchronous."""
    if not device.startswith("cuda"):
        return torch.stack(list(pixels))
    out = torch.empty((len(pixels), *pixels[0].shape), dtype=pixels[0].dtype, pin_memory=True)
    return torch.stack(list(pixels), out=out)


def encode_image_async(
    lm: LoadedModel, pixels: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Start encoding a batch; the (B, D) unit float32 features stay on the device. On CUDA the
    host->device copy (from pinned memory) and the forward pass are queued, not waited for, so
    the caller can decode and stack the next batch meanwhile; `to_numpy` waits."""
    non_blocking = lm.device.startswith("cuda")
    if non_blocking and pixels.device.type == "cpu" and not pixels.is_pinned():
        pixels = pixels.pin_memory()
    with torch.inference_mode(), _autocast(lm.device, dtype):
        feats = lm.model.encode_image(pixels.to(lm.device, non_blocking=non_blocking))
        return F.normalize(feats.float(), dim=-1)


def to_numpy(feats: torch.Tensor) -> np.ndarray:
    return feats.cpu().numpy().astype(np.float32, copy=False)


def encode_image_batch(lm: LoadedModel, pixels: torch.Tensor, dtype: torch.dtype | None = None) -> np.ndarray:
    """(B, 3, H, W) preprocessed pixels -> (B, D) unit float32 vectors (``dtype``: CUDA autocast)."""
    return to_numpy(encode_image_async(lm, pixels, dtype))


def encode_texts(
    lm: LoadedModel, texts: Sequence[str], batch_size: int = 256, dtype: torch.dtype | None = None
) -> np.ndarray:
    """Texts -> (N, D) unit float32 vectors, tokenised by the model's own tokenizer."""
    out = [np.zeros((0, lm.embed_dim), np.float32)]
    out += [vecs for _, vecs in iter_encode_texts(lm, texts, batch_size, dtype)]
    return np.concatenate(out)


def iter_encode_texts(
    lm: LoadedModel, texts: Sequence[str], batch_size: int = 256, dtype: torch.dtype | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, vectors)`` per batch of ``texts``, in order.

    The next batch is tokenised in a helper thread while this one is encoded: the tokenizer is
    pure Python (ftfy, BPE) and costs about as much as a small text tower's forward pass, which
    releases the GIL.
    """
    starts = range(0, len(texts), batch_size)
    if not starts:
        return
    non_blocking = lm.device.startswith("cuda")

    def tokenize(start: int) -> torch.Tensor:
        tokens = lm.tokenizer(list(texts[start : start + batch_size]))
        return tokens.pin_memory() if non_blocking else tokens

    with ThreadPoolExecutor(1, thread_name_prefix="clipdex-tokenize") as pool:
        pending = pool.submit(tokenize, starts[0])
        for i, start in enumerate(starts):
            tokens = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(tokenize, starts[i + 1])
            with torch.inference_mode(), _autocast(lm.device, dtype):
                feats = lm.model.encode_text(tokens.to(lm.device, non_blocking=non_blocking))
                feats = F.normalize(feats.float(), dim=-1)
            yield start, feats.cpu().numpy().astype(np.float32, copy=False)


def _assemble(
    lm: LoadedModel, transform: Any, draft_to: tuple[int, int] | None,
    batch: list[T], pixels: list[Any], failed: list[tuple[T, BaseException]],
) -> tuple[list[T], torch.Tensor | None]:  # fmt: skip
    """The batch as one tensor (JPEG bytes decoded on the device); drops what fails to ``failed``."""
    from clipdex.retrieval import device_decode as dd

    jpegs = [p for p in pixels if isinstance(p, dd.JpegBytes)]
    if not jpegs:
        return batch, stack_pixels(pixels, lm.device)
    on_dev = iter(dd.decode_on_device(jpegs, lm.device, transform))
    kept, out = [], []
    for item, p in zip(batch, pixels):
        if isinstance(p, dd.JpegBytes):
            t = next(on_dev)
            if t is None:  # the device decoder refused it: the CPU path decides
                try:
                    t = load_and_preprocess(p.path, lm.preprocess, draft_to).to(lm.device)
                except Exception as e:
                    failed.append((item, e))
                    continue
        else:
            t = p.to(lm.device, non_blocking=True)
        kept.append(item)
        out.append(t)
    return kept, torch.stack(out) if out else None


def embed_image_files(
    lm: LoadedModel,
    items: Iterable[T],
    path_of: Callable[[T], bytes | str | None],
    *,
    batch_size: int,
    workers: int,
    draft_to: tuple[int, int] | None,
    on_info: Callable[[T, PhotoInfo], None] | None = None,
    on_image: Callable[[T, Any], None] | None = None,
    device_decode: bool | None = None,
) -> Iterator[tuple[list[tuple[T, np.ndarray]], list[tuple[T, BaseException]], int]]:
    """Decode files in parallel (ordered, bounded prefetch) and encode them in batches.

    Yields ``(encoded, failed, done)`` per batch: ``(item, vector)`` pairs in input order, the items
    whose file could not be decoded with the reason, and how many items were consumed so far.
    Decoding of the next files goes on in the threads while a batch is encoded. ``on_info(item,
    (taken_at, width, height))`` is called (from a decode thread) for each item that decoded.
    ``device_decode`` (default: `device_decode.enabled`, i.e. on CUDA) decodes JPEGs on the
    model's device, batch by batch; other files, and JPEGs it refuses, take the CPU path.
    ``on_image(item, picture)`` sees each decoded picture (a decode thread; no device decode then).
    """
    from clipdex.retrieval import device_decode as dd

    on_device = dd.enabled(lm.device) if device_decode is None else device_decode
    on_device = on_device and on_image is None  # the picture is needed on the CPU too
    transform = dd.device_transform(lm.preprocess) if on_device else None

    def decode(item: T) -> torch.Tensor | dd.JpegBytes:
        path = path_of(item)
        if path is None:
            raise DecodeError("no file to decode (imported vector)")
        report = (lambda info: on_info(item, info)) if on_info is not None else None
        if transform is not None:
            jpeg = dd.read_jpeg(path, report)
            if jpeg is not None:
                return jpeg
        see = (lambda picture: on_image(item, picture)) if on_image is not None else None
        return load_and_preprocess(path, lm.preprocess, draft_to, report, see)

    ok: list[T] = []
    pixels: list[torch.Tensor] = []
    failed: list[tuple[T, BaseException]] = []
    done = 0
    # One batch in flight: batch n+1 is queued on the device before batch n's vectors are read
    # back, so on CUDA the copy and the forward pass overlap the decoding of the next files.
    in_flight: tuple[list[T], torch.Tensor, list[tuple[T, BaseException]], int] | None = None

    def finish() -> tuple[list[tuple[T, np.ndarray]], list[tuple[T, BaseException]], int]:
        batch_items, feats, batch_failed, batch_done = in_flight
        return list(zip(batch_items, to_numpy(feats))), batch_failed, batch_done

    for item, result in ordered_prefetch(decode, items, workers, ahead=batch_size * 2):
        done += 1
        if isinstance(result, BaseException):
            failed.append((item, result))
            continue
        ok.append(item)
        pixels.append(result)
        if len(ok) >= batch_size:
            ok, batch = _assemble(lm, transform, draft_to, ok, pixels, failed)
            feats = encode_image_async(lm, batch) if batch is not None else torch.zeros(0, lm.embed_dim)
            started = (ok, feats, failed, done)
            if in_flight is not None:
                yield finish()
            in_flight = started
            ok, pixels, failed = [], [], []
    if in_flight is not None:
        yield finish()
    if ok or failed:
        ok, batch = _assemble(lm, transform, draft_to, ok, pixels, failed) if ok else ([], None)
        vecs = to_numpy(encode_image_async(lm, batch)) if batch is not None else []
        yield list(zip(ok, vecs)), failed, done
