"""Binary hash codes: ITQ (iterative quantisation) in numpy, Hamming search in a faiss binary index.

ITQ (Gong & Lazebnik 2011) centres the vectors, rotates them by PCA and then by an orthogonal
matrix learnt so that taking signs loses as little as possible. With as many bits as dimensions
(512 bits = 64 bytes for 512-d) it is a pure rotation; with fewer bits PCA keeps the top directions.
Hamming distances only rank a short list; the caller re-ranks it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from clipdex.index.faiss.runtime import faiss_module


@dataclass
class ItqCodec:
    mean: np.ndarray  # (d,) float32
    proj: np.ndarray  # (d, nbits) float32: PCA directions times the learnt rotation

    @property
    def nbits(self) -> int:
        return int(self.proj.shape[1])

    @classmethod
    def train(cls, x: np.ndarray, nbits: int | None = None, iters: int = 25, seed: int = 0) -> ItqCodec:
        x = np.asarray(x, np.float32)
        d = x.shape[1]
        nbits = nbits or d
        if nbits % 8 or nbits > d:
            raise ValueError(f"nbits must be a multiple of 8 and <= {d}, got {nbits}")
        mean = x.mean(axis=0)
        v = x - mean
        # PCA: the top `nbits` eigenvectors of the covariance (eigh sorts ascending).
        _, vecs = np.linalg.eigh(v.T @ v)
        pca = vecs[:, ::-1][:, :nbits]
        v = v @ pca.astype(np.float32)
        rot, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((nbits, nbits)))
        rot = rot.astype(np.float32)
        for _ in range(iters):
            b = np.where(v @ rot >= 0, np.float32(1), np.float32(-1))
            # Orthogonal Procrustes: the rotation that best maps v onto the current codes.
            u, _, wt = np.linalg.svd(v.T @ b)
            rot = u @ wt
        return cls(mean, (pca @ rot).astype(np.float32))

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, nbits/8) uint8 codes; bit set where the rotated, centred component is >= 0."""
        return np.packbits((np.asarray(x, np.float32) - self.mean) @ self.proj >= 0, axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"itq_mean": self.mean, "itq_proj": self.proj}

    @classmethod
    def from_arrays(cls, arrays: Any) -> ItqCodec:
        return cls(np.asarray(arrays["itq_mean"]), np.asarray(arrays["itq_proj"]))


def binary_index(nbits: int) -> Any:
    """An empty Hamming index that takes explicit int64 ids."""
    faiss = faiss_module()
    return faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(nbits))
