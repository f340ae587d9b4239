"""A second process holding a library's writer lock, for the lock tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLD = """
import sys, time
sys.argv = ["clipdex", "index", "/photos/holiday"]
from clipdex.index.store.lock import WriterLock
with WriterLock(sys.stdin.readline().strip(), timeout=0):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_lock(lib: Path) -> subprocess.Popen:
    """A real second process holding the library's writer lock (as `clipdex index` would)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    proc.stdin.write(f"{lib}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "held"
    return proc
