"""What an `index` run will write, decided from stat alone (and the hashes of possible moves)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from clipdex.index.scan import FileStat, ScannedImage, content_hash
from clipdex.index.store.rows import Caption, FileRecord


@dataclass(slots=True)
class Todo:
    scanned: ScannedImage
    old: FileRecord | None


@dataclass(slots=True)
class Plan:
    """What a run will write, decided from stat (and the hashes of possible moves) alone."""

    captions: dict[int, Caption]  # image id -> its stored sidecar caption
    failures: dict[bytes, tuple[int, int]]  # remembered decode failures in scope
    todo: list[Todo] = field(default_factory=list)  # new and changed images: to encode
    moves: list[tuple[FileRecord, ScannedImage]] = field(default_factory=list)
    caption_fixes: list[tuple[int, ScannedImage]] = field(default_factory=list)
    gone: dict[bytes, FileRecord] = field(default_factory=dict)  # to remove
    forget: list[bytes] = field(default_factory=list)  # failures of files gone
    in_scope: Callable[[bytes], bool] | None = None  # what "gone" covers (videos follow it too)


def find_moves(
    todo: list[Todo], gone: dict[bytes, FileRecord]
) -> tuple[list[Todo], list[tuple[FileRecord, ScannedImage]]]:
    """Pair new paths with vanished ones of the same size and content hash (removed from ``gone``)."""
    by_size: dict[int, list[tuple[bytes, FileRecord]]] = defaultdict(list)
    for path, rec in gone.items():
        if rec.content_hash is not None:
            by_size[rec.size].append((path, rec))
    if not by_size:
        return todo, []
    rest, moves = [], []
    for t in todo:
        f = t.scanned.image
        candidates = by_size.get(f.size) if t.old is None else None
        digest = content_hash(f.path, f.size) if candidates else None
        match = next((c for c in candidates or () if c[1].content_hash == digest), None) if digest else None
        if match is None:
            rest.append(t)
            continue
        candidates.remove(match)
        del gone[match[0]]
        moves.append((match[1], t.scanned))
    return rest, moves


def sidecar_changed(had: Caption | None, now: FileStat | None) -> bool:
    if had is None:
        return now is not None
    if now is None:
        return True
    return had.path != now.path or had.mtime_ns != now.mtime_ns or had.size != now.size
