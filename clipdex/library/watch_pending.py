"""What a watcher has heard of but not applied yet, and when each change is ready to take.

A file is ready once its size and mtime have held for ``debounce`` seconds (so a picture still
being copied is never indexed half written). A path's absence is ready after the same wait, and
only once every file heard of before it is ready: a rename is heard as a deletion of the old path
and an appearance of the new one, and both must land in one batch for the move to keep its ids.
Memory is bounded by the files in flux, never by the number of events.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from clipdex.index.scan import FileStat

SLACK = 0.25  # a rename's two halves can be heard this far apart


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float  # when this size and mtime were first seen
    first: float  # when the path was first heard of


class Pending:
    """Files (images and sidecars) and absences heard of, keyed by path (bytes)."""

    def __init__(self, debounce: float):
        self.debounce = debounce
        self.files: dict[bytes, _Seen] = {}
        self.gone: dict[bytes, float] = {}  # path -> when its absence was heard

    def __len__(self) -> int:
        return len(self.files) + len(self.gone)

    def touch(self, path: bytes, now: float, st: FileStat | None = None) -> bool:
        """A file was written or appeared (``st``: its stat, if the caller has it); False when it
        is gone already (then it counts as an absence)."""
        if st is None:
            st = _stat(path)
            if st is None:
                self.lose(path, now)
                return False
        seen = self.files.get(path)
        if seen is None:
            self.files[path] = _Seen(st.size, st.mtime_ns, now, now)
        elif (seen.size, seen.mtime_ns) != (st.size, st.mtime_ns):
            seen.size, seen.mtime_ns, seen.since = st.size, st.mtime_ns, now
        self.gone.pop(path, None)
        return True

    def lose(self, path: bytes, now: float) -> None:
        """A path (a file or a whole folder) was deleted or renamed away."""
        self.files.pop(path, None)
        self.gone[path] = now

    def ready(self, now: float) -> tuple[list[bytes], list[bytes]]:
        """(files ready, oldest first; absences ready). Files due are stat'ed again: a changed
        one waits again, a vanished one becomes an absence."""
        files: list[tuple[float, bytes]] = []
        oldest_waiting = float("inf")
        for path, seen in list(self.files.items()):
            if now - seen.since >= self.debounce:
                st = _stat(path)
                if st is None:
                    self.lose(path, now)
                    continue
                if (st.size, st.mtime_ns) == (seen.size, seen.mtime_ns):
                    files.append((seen.first, path))
                    continue
                seen.size, seen.mtime_ns, seen.since = st.size, st.mtime_ns, now
            oldest_waiting = min(oldest_waiting, seen.first)
        gone = [p for p, t in self.gone.items() if now - t >= self.debounce and t + SLACK < oldest_waiting]
        return [p for _, p in sorted(files)], gone

    def stable_stat(self, path: bytes) -> tuple[int, int] | None:
        """(size, mtime_ns) that held for a file, None if it is not pending."""
        seen = self.files.get(path)
        return (seen.size, seen.mtime_ns) if seen is not None else None

    def waiting(self, path: bytes, now: float) -> bool:
        """Whether ``path`` is a pending file that is not ready yet."""
        seen = self.files.get(path)
        return seen is not None and now - seen.since < self.debounce

    def done(self, files: list[bytes], gone: list[bytes]) -> None:
        for path in files:
            self.files.pop(path, None)
        for path in gone:
            self.gone.pop(path, None)


def _stat(path: bytes) -> FileStat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStat(path, st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None
