"""How paths are shown: one home for both spellings.

`display_path` is for messages (undecodable bytes escaped, `caf\\xe9.jpg`, so the exact name can
be told); `shown_path` and `path_b64` are for JSON (valid UTF-8 as is, other bytes as U+FFFD, the
exact bytes beside it in base64), the documented output contract.
"""

from __future__ import annotations

import base64
import os
import sys


def display_path(path: str | bytes | os.PathLike) -> str:
    """A printable path: valid UTF-8 unchanged, undecodable bytes escaped (`caf\\xe9.jpg`)."""
    path = os.fspath(path)
    if isinstance(path, str):
        try:
            path = os.fsencode(path)  # undo surrogateescape so the bytes can be escaped visibly
        except UnicodeEncodeError:
            return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return path.decode(sys.getfilesystemencoding(), "backslashreplace")


def shown_path(raw: bytes | None) -> str | None:
    """A path for people and JSON: valid UTF-8 as is, other bytes as U+FFFD."""
    return raw.decode("utf-8", "replace") if raw is not None else None


def path_b64(raw: bytes | None) -> dict[str, str]:
    """``{"path_b64": …}`` (the exact bytes, base64) for a name that is not valid UTF-8, else ``{}``:
    what every JSON output that carries a ``path`` adds beside it."""
    if raw is None or _is_utf8(raw):
        return {}
    return {"path_b64": base64.b64encode(raw).decode("ascii")}


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
