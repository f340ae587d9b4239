"""Sidecar captions: the ``.txt`` beside a photo, read as its caption (or refused with one line)."""

from __future__ import annotations

import os
import stat

from clipdex.errors import ClipdexError

SIDECAR_MAX = 64 * 1024  # a larger .txt beside a photo is not a caption


class SidecarError(ClipdexError):
    """A sidecar that cannot be a caption (binary, oversized, unreadable); the message says why."""


def read_sidecar(path: bytes | str) -> str | None:
    """The whole sidecar text (UTF-8, BOM dropped), stripped; None when empty.

    Raises SidecarError for a file over ``SIDECAR_MAX`` bytes, one that is not UTF-8 text, or one
    that cannot be read: such a file is skipped with one line rather than becoming a caption.
    """
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SidecarError("sidecar caption is not a regular file; ignored")
            data = f.read(SIDECAR_MAX + 1)
    except FileNotFoundError:
        return None  # deleted since the scan
    except OSError as e:
        raise SidecarError(f"cannot read sidecar caption ({e.strerror or e}); ignored") from e
    return sidecar_text(data)


def sidecar_text(data: bytes) -> str | None:
    """A sidecar's caption from its first ``SIDECAR_MAX + 1`` bytes (the rules of `read_sidecar`)."""
    if len(data) > SIDECAR_MAX:
        raise SidecarError(f"sidecar caption larger than {SIDECAR_MAX // 1024} KB; ignored")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SidecarError(f"sidecar caption is not UTF-8 text (byte {e.start}); ignored") from e
    if "\0" in text:
        raise SidecarError("sidecar caption is binary (NUL bytes); ignored")
    return text.strip() or None
