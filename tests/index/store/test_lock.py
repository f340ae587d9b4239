"""WriterLock: one writer per library across processes, re-entrant within one, released on exit or crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from helpers.locks import hold_lock

from clipdex.errors import LockHeld
from clipdex.index.store import lock as lock_mod
from clipdex.index.store.lock import LOCK_NAME, ReadOnlyLibrary, WriterLock


def test_second_lock_waits_for_the_first(tmp_path):
    """Two writers in a row: the second gets the lock as soon as the first process ends."""
    from clipdex.index.store.lock import WriterLock

    tmp_path.mkdir(exist_ok=True)
    holder = hold_lock(tmp_path)
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -9 {holder.pid}"])
    with WriterLock(tmp_path, timeout=20):
        assert holder.wait(timeout=5) == -signal.SIGKILL
    killer.wait()


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(LockHeld) as err, WriterLock(tmp_path, timeout=0.2):
            pass
        msg = str(err.value)
        assert f"pid {holder.pid}: clipdex index /photos/holiday" in msg and str(tmp_path) in msg
        assert str(tmp_path.absolute() / LOCK_NAME) not in lock_mod._held  # a refused lock holds nothing
    finally:
        holder.kill()
        holder.wait()
    with WriterLock(tmp_path, timeout=5):  # the killed holder's lock went with it
        pass


def test_this_process_holds_it_while_inside_and_not_after(tmp_path):
    """A child process cannot take the lock while we hold it, and can right after we leave."""
    probe = (
        "import sys\nfrom clipdex.errors import LockHeld\nfrom clipdex.index.store.lock import WriterLock\n"
        "try:\n    WriterLock(sys.argv[1], timeout=0).acquire()\nexcept LockHeld:\n    sys.exit(3)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def child() -> int:
        return subprocess.run([sys.executable, "-c", probe, str(tmp_path)], env=env, timeout=60).returncode

    with WriterLock(tmp_path, timeout=0) as held:
        assert child() == 3
        me = json.loads((tmp_path / LOCK_NAME).read_text())
        assert me["pid"] == os.getpid() and held.path == tmp_path / LOCK_NAME
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: names nobody
    assert child() == 0


def test_reentrant_in_one_process_and_released_by_the_outermost(tmp_path):
    outer = WriterLock(tmp_path, timeout=0)
    inner = WriterLock(tmp_path, timeout=0)  # a second lock object: re-enters, never waits on itself
    key = str((tmp_path / LOCK_NAME).absolute())
    with outer:
        with inner:
            assert lock_mod._held[key][1] == 2
        assert lock_mod._held[key][1] == 1
        inner.release()  # releasing a lock not entered does nothing
        assert lock_mod._held[key][1] == 1
    assert key not in lock_mod._held


def test_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError), WriterLock(tmp_path, timeout=0):
        raise RuntimeError("boom")
    assert str((tmp_path / LOCK_NAME).absolute()) not in lock_mod._held
    with WriterLock(tmp_path, timeout=0):
        pass


def test_other_threads_share_the_process_lock(tmp_path):
    """The lock is per process (flock on one open file): a thread of the holder re-enters it."""
    got = []
    with WriterLock(tmp_path, timeout=0):
        t = threading.Thread(target=lambda: got.append(WriterLock(tmp_path, timeout=0).__enter__()))
        t.start()
        t.join(5)
        got[0].release()
    assert len(got) == 1


def test_missing_and_read_only_folders(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="no library at"):
        WriterLock(tmp_path / "nope", timeout=0).acquire()
    monkeypatch.setattr(lock_mod.os, "access", lambda path, mode: False)
    with pytest.raises(ReadOnlyLibrary, match="is read-only"):
        WriterLock(tmp_path, timeout=0).acquire()


def test_timeout_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPDEX_LOCK_TIMEOUT", "0.25")
    assert WriterLock(tmp_path).timeout == 0.25
    assert WriterLock(tmp_path, timeout=7).timeout == 7
    monkeypatch.delenv("CLIPDEX_LOCK_TIMEOUT")
    assert WriterLock(tmp_path).timeout == 3.0
