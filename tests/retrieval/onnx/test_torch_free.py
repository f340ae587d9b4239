"""OnnxEncoder runs in a process where torch, torchvision and open_clip cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from helpers.embedhelp import encode_images
from helpers.onnxhelp import probe_pictures

from clipdex.retrieval.embed import encode_texts

TEXTS = ["a red square", "two dogs", "", "東京 🐶 &amp;", " ".join(["long"] * 50)]
REPO = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent(
    """
    import sys
    for name in ("torch", "torchvision", "open_clip"):
        sys.modules[name] = None  # any import of them now raises ImportError
    import numpy as np
    from helpers.onnxhelp import probe_pictures
    from clipdex.retrieval.onnx.encoder import OnnxEncoder

    folder, texts_out, images_out = sys.argv[1:4]
    texts = sys.stdin.read().split("\\x00")
    enc = OnnxEncoder(folder)
    np.save(texts_out, enc.encode_texts(texts))
    np.save(images_out, enc.encode_images(probe_pictures()))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "open_clip")
                    and sys.modules[m] is not None)
    print("torch-like modules:", loaded)
    """
)


def test_encoder_without_torch_matches_torch(exported, tiny_lm, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    texts_out, images_out = tmp_path / "texts.npy", tmp_path / "images.npy"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(exported[0]), str(texts_out), str(images_out)],
        input="\x00".join(TEXTS), capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "torch-like modules: []" in proc.stdout, proc.stdout
    texts, images = np.load(texts_out), np.load(images_out)
    text_cos = np.sum(texts * encode_texts(tiny_lm, TEXTS), axis=1)
    image_cos = np.sum(images * encode_images(tiny_lm, probe_pictures()), axis=1)
    assert texts.shape == (len(TEXTS), 64) and images.shape == (len(probe_pictures()), 64)
    assert text_cos.min() >= 0.9999 and image_cos.min() >= 0.9999, (text_cos, image_cos)
