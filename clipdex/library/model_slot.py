"""The library's model: the one its vectors were made with (recorded in the store), the one a
command asks for, and the one loaded (once, then kept)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clipdex.errors import ModelError
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE
from clipdex.library.runtime import fingerprint, gpu_runtime, graphs_dir, precision_choice, runtime_choice
from clipdex.retrieval.hf_text import tokenizer_record
from clipdex.retrieval.models import LoadedModel, ModelSpec, load_model, resolve_spec

log = logging.getLogger("clipdex")


class ModelSlot:
    """Loads the model lazily and follows other processes that change it (use-model, finetune --apply)."""

    def __init__(
        self, store: Store, requested: ModelSpec | None, device: str = "auto", folder: Path | None = None,
        runtime: str | None = None, precision: str | None = None, notice: Callable[[str], None] | None = None,
    ):  # fmt: skip
        self.store = store
        self.requested = requested  # asked for by this process (None: the library's own)
        self.requested_precision = precision_choice(precision)  # likewise
        self.device = device
        self.folder = folder  # the library's (where its ONNX graphs are kept)
        self.runtime = runtime_choice(runtime)
        self.notice = notice or log.info  # what a command says on stderr (an export, torch instead)
        self._loaded: LoadedModel | None = None
        self._writer: Any = None  # the Encoder writes use (kept: one export check per process)
        self._said_torch = False
        self.force_int8 = False  # export int8 even where it keeps < 90% of the top-10 neighbours
        self._onnx: Any = None  # the OnnxEncoder queries use (None: torch) ...
        self._onnx_decided = False  # ... once decided: again after another process's write
        self._seen_generation: int | None = None

    @property
    def stored(self) -> ModelSpec | None:
        """The model the library's vectors were made with (None until vectors are stored)."""
        raw = self.store.meta.get("model")
        return ModelSpec.from_json(raw) if raw else None

    @property
    def target(self) -> ModelSpec:
        """The model a write uses: the one asked for, else the library's, else the default."""
        return self.requested or self.stored or resolve_spec(None)

    @property
    def precision(self) -> str:
        """The precision the library's vectors were made at (``fp32`` unless recorded otherwise)."""
        return self.store.meta.get("precision") or "fp32"

    @property
    def target_precision(self) -> str:
        """The precision a write uses: the one asked for, else the library's."""
        return self.requested_precision or self.precision

    @property
    def model(self) -> LoadedModel:
        """The library's model (the target while none is recorded), loaded once."""
        if self._loaded is None:
            self._loaded = load_model(self.stored or self.target, self.device)
        return self._loaded

    def load(self, spec: ModelSpec) -> LoadedModel:
        """``spec``'s model: the kept one when it is that, else freshly loaded (not kept)."""
        if self._loaded is not None and self._loaded.spec == spec:
            return self._loaded
        return load_model(spec, self.device)

    def keep(self, lm: LoadedModel) -> None:
        """Keep ``lm`` loaded (the library's model after `use_model`, or a model loaded already)."""
        self._loaded = lm
        self._onnx_decided = False  # another model: maybe other graphs

    def check(self, reembed: bool) -> None:
        """Refuse writing with another model (or precision) than the stored one, unless re-embedding
        (or the library holds nothing yet)."""
        if self.runtime == "torch" and self.target_precision != "fp32":
            raise ModelError(f"this library's vectors are {self.target_precision}: only ONNX Runtime "
                             "encodes them (not --runtime torch)")  # fmt: skip
        stored, wanted = self.stored, self.requested
        if stored is None or reembed or not self.store.items.count():
            return
        if wanted and wanted != stored:
            raise ModelError(
                f"this library uses model {stored}; refusing {wanted} "
                "(use `clipdex index --reembed` to re-embed everything with it)"
            )
        if self.target_precision != self.precision:
            raise ModelError(
                f"this library's vectors are {self.precision}; --precision {self.target_precision} means "
                "re-embedding everything (add --reembed)"
            )

    def for_writing(self, reembed: bool = False) -> tuple[LoadedModel, bool]:
        """The model a writing command uses, and whether the library must be re-embedded with it.
        Checked (`check`) and loaded; recorded when the library has no model yet."""
        self.check(reembed)
        target, stored = self.target, self.stored
        if self._loaded is None or self._loaded.spec != target:
            self._loaded = load_model(target, self.device)
        if stored is None or not self.store.items.count():
            with self.store.transaction():
                self.store.meta.set("model", self._loaded.spec.to_json())
                self.store.meta.set("dim", str(self._loaded.embed_dim))
                self.store.meta.set(
                    "tokenizer", json.dumps(tokenizer_record(self._loaded.tokenizer), sort_keys=True)
                )
                self.store.meta.set("precision", self.target_precision)
            return self._loaded, False
        return self._loaded, target != stored or self.target_precision != self.precision or reembed

    def adding(self) -> Any:
        """The `Encoder` for adding items with the library's model as it is: a change of model or
        precision is refused (no re-embedding here); an empty library records them now."""
        self.check(reembed=False)
        if self.stored is None or not self.store.items.count():
            self.for_writing()
        return self.writer_encoder()

    # ---- write encoding: torch or ONNX Runtime, exported here the first time -----------------
    def writer_encoder(
        self, lm: LoadedModel | None = None, precision: str | None = None,
        sample: Callable[[], list[bytes]] | None = None,
    ) -> Any:  # fmt: skip
        """The `Encoder` a write uses for ``lm`` (default: the library's model) at ``precision``
        (default: the target one). With ONNX Runtime, a missing graph folder is exported now
        (int8 measured on ``sample()``'s pictures, default the library's); a model that cannot be
        exported is remembered and encoded with torch under ``auto``."""
        from clipdex.retrieval.encoders import TorchEncoder

        spec = lm.spec if lm is not None else (self.stored or self.target)
        precision = precision or self.target_precision
        key = (spec, precision)
        if self._writer is not None and self._writer[0] == key:
            return self._writer[1]
        model = (lambda: lm) if lm is not None else (lambda: self.model)
        gpu = gpu_runtime(self.device) if self.runtime != "torch" else None
        if self.runtime == "torch" or (gpu == "torch" and self.runtime == "auto" and precision == "fp32"):
            if precision != "fp32":
                raise ModelError(f"{precision} vectors are made by ONNX Runtime only (not --runtime torch)")
            enc = TorchEncoder(model())
        else:
            enc = self._onnx_writer(spec, precision, model, sample, "cuda" if gpu else "cpu")
        self._writer = (key, enc)
        log.debug("writes encode model %s with %s", spec, enc.runtime)
        return enc

    def _onnx_writer(self, spec: ModelSpec, precision: str, model: Callable[[], LoadedModel],
                     sample: Callable[[], list[bytes]] | None, device: str) -> Any:  # fmt: skip
        from clipdex.library.runtime import sample_pictures
        from clipdex.retrieval.encoders import TorchEncoder
        from clipdex.retrieval.onnx.encoder import OnnxEncoder, read_manifest
        from clipdex.retrieval.onnx.export import ExportError, export_model

        folder, fp = graphs_dir(self.folder, spec), fingerprint(spec)
        manifest = read_manifest(folder)
        if manifest is None or precision not in manifest.get("precisions", []):
            failed = self.store.meta.get("onnx_failed") or ""
            if self.runtime == "auto" and precision == "fp32" and failed.startswith(fp):
                return TorchEncoder(model())  # said once, when the export failed
            lm = model()
            try:
                pictures = ()
                if precision == "int8":
                    paths = sample() if sample else [p for _, p, _ in self.store.items.iter(IMAGE) if p]
                    pictures = sample_pictures(paths, lm.image_size)
                self.notice(f"exporting model {spec} to ONNX Runtime ({precision}; once per model) …")
                export_model(lm, folder, int8=precision == "int8", pictures=pictures, on_progress=self.notice,
                             force_int8=self.force_int8)  # fmt: skip
            except ExportError as e:
                if self.runtime == "onnx" or precision != "fp32":
                    raise
                self.notice(f"{e}; encoding with torch")
                with self.store.transaction():
                    self.store.meta.set("onnx_failed", f"{fp} {e}")
                return TorchEncoder(lm)
            self._onnx_decided = False  # queries may use them now
        return OnnxEncoder(folder, precision=precision, device=device)

    # ---- query encoding: torch or ONNX Runtime (clipdex.library.runtime) ----------------------
    def onnx(self) -> Any:
        """The ONNX encoder of the library's model when the runtime uses it, else None (torch).

        Decided on first use and kept: no store read or file check per query (the server encodes
        outside its store lock). `follow` (another process wrote: maybe a new model) and
        `forget_runtime` (graphs exported here) make the next use decide again."""
        if not self._onnx_decided:
            self._onnx = self._find_onnx()
            self._onnx_decided = True
            log.debug("queries encode with %s", self._onnx.runtime if self._onnx is not None else "torch")
        if self._onnx is None and self.runtime == "onnx":
            raise ModelError(
                f"no ONNX graphs for model {self.stored or self.target} in this library: run "
                "`clipdex model export-onnx` (or use --runtime torch)"
            )
        return self._onnx

    def _find_onnx(self) -> Any:
        if self.runtime == "torch" or self.folder is None:
            return None
        spec, precision = self.stored or self.target, self.precision
        folder = graphs_dir(self.folder, spec)
        if self._onnx is not None and self._onnx.folder == folder and self._onnx.precision == precision:
            return self._onnx  # the same graphs: keep their sessions
        from clipdex.retrieval.onnx.encoder import OnnxEncoder, read_manifest

        manifest = read_manifest(folder)
        if manifest is None:
            failed = (self.store.meta.get("onnx_failed") or "").startswith(fingerprint(spec))
            if self.runtime == "auto" and not failed and not self._said_torch and self.stored is not None:
                self._said_torch = True
                self.notice(f"no ONNX graphs for model {spec} in this library yet: encoding queries with "
                            "torch (`clipdex check --repair` exports them)")  # fmt: skip
            return None
        if precision not in manifest.get("precisions", []):
            precision = "fp32"  # e.g. int8 graphs removed by hand: fp32 ones are close, and exact for fp32
        device = "cuda" if self.device.startswith("cuda") else "cpu"
        return OnnxEncoder(folder, precision=precision, device=device)

    def forget_runtime(self) -> None:
        """Decide again on next use which runtime encodes (after exporting graphs)."""
        self._onnx_decided = False
        self._writer = None

    @property
    def runtime_name(self) -> str:
        """What encodes queries now: ``torch`` or e.g. ``onnx (CPUExecutionProvider, fp32)``."""
        try:
            enc = self.onnx()
        except ModelError:  # runtime onnx without graphs: queries are refused, say so
            return "onnx (no graphs for this model)"
        return enc.runtime if enc is not None else "torch"

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Query texts -> (N, D) unit vectors, by the runtime in use."""
        enc = self.onnx()
        if enc is not None:
            return enc.encode_texts(texts)
        from clipdex.retrieval.embed import encode_texts

        return encode_texts(self.model, texts)

    def encode_pictures(self, pictures: list) -> np.ndarray:
        """Decoded query pictures (PIL) -> (N, D) unit vectors, by the runtime in use."""
        enc = self.onnx()
        if enc is not None:
            return enc.encode_images(pictures)
        lm = self.model
        if not pictures:
            return np.zeros((0, lm.embed_dim), np.float32)
        import torch

        from clipdex.retrieval.embed import encode_image_batch

        return encode_image_batch(lm, torch.stack([lm.preprocess(p) for p in pictures]))

    @property
    def image_size(self) -> tuple[int, int]:
        """The model's input size (a large JPEG query decodes at reduced scale, never below it)."""
        enc = self.onnx()
        return tuple(enc.image_size) if enc is not None else tuple(self.model.image_size)

    def follow(self) -> int:
        """The store's generation; when it moved, another process may have changed the model:
        then the next use reloads it."""
        gen = self.store.generation
        if gen != self._seen_generation:
            self._seen_generation = gen
            spec = self.stored if self._loaded is not None else None
            if spec is not None and self._loaded.spec != spec:
                self._loaded = None
            self._onnx_decided = False  # the model (so its graphs) may have changed too
        return gen
