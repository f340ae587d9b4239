"""The library's model: the one its vectors were made with (recorded in the store), the one a
command asks for, and the one loaded (once, then kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clipdex.errors import ModelError
from clipdex.index.store.database import Store
from clipdex.library.runtime import graphs_dir, runtime_choice
from clipdex.retrieval.models import LoadedModel, ModelSpec, load_model, resolve_spec


class ModelSlot:
    """Loads the model lazily and follows other processes that change it (use-model, finetune --apply)."""

    def __init__(
        self, store: Store, requested: ModelSpec | None, device: str = "auto", folder: Path | None = None,
        runtime: str | None = None,
    ):  # fmt: skip
        self.store = store
        self.requested = requested  # asked for by this process (None: the library's own)
        self.device = device
        self.folder = folder  # the library's (where its ONNX graphs are kept)
        self.runtime = runtime_choice(runtime)
        self._loaded: LoadedModel | None = None
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
        """Refuse writing with another model than the stored one, unless re-embedding."""
        stored, wanted = self.stored, self.requested
        if stored and wanted and wanted != stored and not reembed:
            raise ModelError(
                f"this library uses model {stored}; refusing {wanted} "
                "(use `clipdex index --reembed` to re-embed everything with it)"
            )

    def for_writing(self, reembed: bool = False) -> tuple[LoadedModel, bool]:
        """The model a writing command uses, and whether the library must be re-embedded with it.
        Checked (`check`) and loaded; recorded when the library has no model yet."""
        self.check(reembed)
        target, stored = self.target, self.stored
        if self._loaded is None or self._loaded.spec != target:
            self._loaded = load_model(target, self.device)
        if stored is None:
            with self.store.transaction():
                self.store.meta.set("model", self._loaded.spec.to_json())
                self.store.meta.set("dim", str(self._loaded.embed_dim))
            return self._loaded, False
        return self._loaded, target != stored or reembed

    # ---- query encoding: torch or ONNX Runtime (clipdex.library.runtime) ----------------------
    def onnx(self) -> Any:
        """The ONNX encoder of the library's model when the runtime uses it, else None (torch).

        Decided on first use and kept: no store read or file check per query (the server encodes
        outside its store lock). `follow` (another process wrote: maybe a new model) and
        `forget_runtime` (graphs exported here) make the next use decide again."""
        if not self._onnx_decided:
            self._onnx = self._find_onnx()
            self._onnx_decided = True
        if self._onnx is None and self.runtime == "onnx":
            raise ModelError(
                f"no ONNX graphs for model {self.stored or self.target} in this library: run "
                "`clipdex model export-onnx` (or use --runtime torch)"
            )
        return self._onnx

    def _find_onnx(self) -> Any:
        if self.runtime == "torch" or self.folder is None:
            return None
        folder = graphs_dir(self.folder, self.stored or self.target)
        if self._onnx is not None and self._onnx.folder == folder:
            return self._onnx  # the same graphs: keep their sessions
        from clipdex.retrieval.onnx.encoder import OnnxEncoder, read_manifest

        if read_manifest(folder) is None:
            return None
        return OnnxEncoder(folder, device="cuda" if self.device.startswith("cuda") else "cpu")

    def forget_runtime(self) -> None:
        """Decide again on next use which runtime encodes queries (after exporting graphs)."""
        self._onnx_decided = False

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
