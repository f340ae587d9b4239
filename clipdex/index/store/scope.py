"""Reads restricted to some paths: exact paths and whole folders (byte ranges on an indexed path).

A watcher's batch touches a few files or folders of a large library; reading only their rows keeps
each batch's cost independent of the library's size.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence

from clipdex.index.store.batches import chunks

_SEP = os.sep.encode()


def folder_range(root: bytes) -> tuple[bytes, bytes]:
    """[low, high) of the paths strictly below ``root`` (``root/`` up to ``root0``: '0' follows '/')."""
    prefix = root if root.endswith(_SEP) else root + _SEP
    return prefix, prefix[:-1] + bytes([prefix[-1] + 1])


def rows_at(
    conn: sqlite3.Connection, select: str, paths: Sequence[bytes], folders: Sequence[bytes]
) -> Iterator[tuple]:
    """Rows of ``select`` (ending in ``WHERE … AND``) whose ``path`` is one of ``paths`` or lies
    under one of ``folders`` (a folder path itself counts too)."""
    for chunk in chunks(sorted(set(paths) | set(folders)), 500):
        marks = ",".join("?" * len(chunk))
        yield from conn.execute(f"{select} path IN ({marks})", chunk)
    for folder in dict.fromkeys(folders):
        low, high = folder_range(folder)
        yield from conn.execute(f"{select} path >= ? AND path < ?", (low, high))
