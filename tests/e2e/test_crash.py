"""A few SIGKILLs of real `index` and `import-embeddings` processes, resumed and verified.

The heavy version (20+ kills of five commands) is bench/crash.py; this runs its functions.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
from helpers.corehelp import run

_spec = importlib.util.spec_from_file_location("crash", Path(__file__).parents[2] / "bench" / "crash.py")
crash = importlib.util.module_from_spec(_spec)
sys.modules["crash"] = crash  # dataclasses look their module up
_spec.loader.exec_module(crash)


def in_process_check(lib: Path) -> tuple[int, str, str]:
    res = run("--library", lib, "check", "--json")
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return crash.make_fixture(tmp_path_factory.mktemp("crash"), n_images=8)


@pytest.mark.parametrize(("command", "window"), [("index", 3.0), ("import-embeddings", 1.5)])
def test_killed_and_resumed(fixture, tmp_path, command, window):
    (scenario,) = crash.scenarios(fixture, [command])
    tally = crash.run_scenario(
        scenario, 2, tmp_path, random.Random(7), duration=window, check=in_process_check
    )
    assert tally.kills == 2
    assert (tally.failed, tally.lost, tally.duplicated) == (0, 0, 0), tally.errors
