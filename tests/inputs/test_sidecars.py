"""clipdex.inputs.sidecars: a sidecar .txt becomes a caption, or is refused with one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipdex.inputs.sidecars import SIDECAR_MAX, SidecarError, read_sidecar


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_read_sidecar(tmp_path: Path) -> None:
    p = touch(tmp_path / "a.txt", "\ufeff  a red bus\n\n\u2028x\n".encode())
    assert read_sidecar(os.fsencode(p)) == "a red bus\n\n\u2028x"
    assert read_sidecar(os.fsencode(touch(tmp_path / "e.txt", b" \n\t"))) is None
    assert read_sidecar(os.fsencode(tmp_path / "missing.txt")) is None
    # Binary, not UTF-8, or oversized: refused with a reason, never turned into a caption.
    for name, data, word in [
        ("bad.txt", b"caption\xff\n", "not UTF-8"),
        ("bin.txt", b"\x00\x01\x02 PK", "binary"),
        ("big.txt", b"word " * (SIDECAR_MAX // 5 + 1), "larger than 64 KB"),
    ]:
        with pytest.raises(SidecarError, match=word):
            read_sidecar(os.fsencode(touch(tmp_path / name, data)))
    assert read_sidecar(os.fsencode(touch(tmp_path / "max.txt", b"a" * SIDECAR_MAX))) == "a" * SIDECAR_MAX
