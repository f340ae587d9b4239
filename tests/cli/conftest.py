"""What the CLI command tests share: a small indexed library (six images, one captioned)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.corehelp import make_images, ok


@pytest.fixture
def library(tmp_path: Path, tiny_model_dir: Path) -> Path:
    make_images(tmp_path / "pics", [f"s{i}.png" for i in range(6)])
    (tmp_path / "pics" / "s0.txt").write_text("caption zero\n", encoding="utf-8")
    ok("--library", tmp_path / "lib", "index", tmp_path / "pics", "--model", tiny_model_dir, "--quiet")
    return tmp_path / "lib"
