"""The CLI's contracts: JSON shapes, output modes, exit codes, errors, the writer lock, start-up."""

from __future__ import annotations

import signal
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


def test_second_lock_waits_for_the_first(tmp_path):
    """Two writers in a row: the second gets the lock as soon as the first process ends."""
    from clipdex.index.store.lock import WriterLock

    tmp_path.mkdir(exist_ok=True)
    holder = hold_lock(tmp_path)
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -9 {holder.pid}"])
    with WriterLock(tmp_path, timeout=20):
        assert holder.wait(timeout=5) == -signal.SIGKILL
    killer.wait()
