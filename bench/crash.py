"""Crash test: SIGKILL writing commands at random moments, resume, and verify the library.

    python bench/crash.py [--kills 20]
                          [--commands index,add-texts,import-embeddings,import-ondisk,use-model,finetune]
                          [--images 40] [--seed 0]

For each command: one uninterrupted run measures its duration T; then, --kills times, a fresh
copy of the starting library gets the command started as a real process and killed with SIGKILL
after a random delay in [0, T], the command is re-run to completion (the resume), and the result
is verified: the library opens, `clipdex check --json` is healthy (SQLite integrity, FAISS ids ==
SQLite ids, vectors unit-norm, no leftovers), counts are exact (every expected path or text once:
none lost, none duplicated) and the library's model is the expected one. Prints one line per
command: kills, runs that failed verification, items lost, items duplicated.

Uses a tiny random-init model made by clipdex itself (no download). tests/e2e/test_crash.py runs a
few kills of `index` and `import-embeddings` through the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def clipdex(lib: Path, *args: object) -> list[str]:
    return [sys.executable, "-m", "clipdex.cli.main", "--library", str(lib), *map(str, args)]


def env() -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
                CLIPDEX_LOCK_TIMEOUT="30")  # fmt: skip


@dataclass
class Scenario:
    """A starting library, the command to kill, and what the library must hold afterwards."""

    name: str
    start: Path  # the library to copy before each kill (may not exist: a new library)
    args: list
    images: set[str]  # expected image paths
    texts: set[str]  # expected texts
    model: str | None = None  # expected model name (substring), when the command changes it


@dataclass
class Tally:
    kills: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    errors: list[str] = field(default_factory=list)


def make_fixture(root: Path, n_images: int, seed: int = 0, models: tuple[Path, Path] | None = None,
                 index=None) -> dict:  # fmt: skip
    """Two tiny models, a captioned image folder, a texts file, an embeddings file, base libraries.

    ``models`` reuses two tiny models; ``index(lib, folder, model)`` replaces the `index` process
    that makes the base library (the test suite runs it in-process).
    """
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    root.mkdir(parents=True, exist_ok=True)
    if models is None:
        from clipdex.retrieval.model_init import init_model

        cfg = root / "tiny.json"
        cfg.write_text(json.dumps(TINY))
        models = tuple(init_model(str(cfg), root / f"model-{c}", seed=s) for s, c in enumerate("ab"))
    model_a, model_b = models
    rng = np.random.default_rng(seed)
    imgs = root / "imgs"
    imgs.mkdir()
    for i in range(n_images):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((64, 64), Image.Resampling.NEAREST).save(imgs / f"img{i:03d}.png")
        if i % 2 == 0:
            (imgs / f"img{i:03d}.txt").write_text(f"caption number {i}")
    texts = root / "texts.txt"
    texts.write_text("".join(f"free text line {i}\n" for i in range(3000)))
    vecs = rng.standard_normal((5000, 64)).astype(np.float32)
    np.save(root / "vecs.npy", vecs)
    (root / "meta.csv").write_text("path\n" + "".join(f"/elsewhere/photo{i}.jpg\n" for i in range(5000)))
    base = root / "base"  # the folder indexed with model A
    if index is None:
        subprocess.run(clipdex(base, "index", imgs, "--model", model_a, "--quiet"), env=env(), check=True)
    else:
        index(base, imgs, model_a)
    return {"root": root, "imgs": imgs, "model_a": model_a, "model_b": model_b, "texts": texts, "base": base,
            "vecs": root / "vecs.npy", "meta": root / "meta.csv", "n": n_images}  # fmt: skip


def scenarios(fx: dict, names: list[str]) -> list[Scenario]:
    imgs = {os.fsdecode(fx["imgs"] / f"img{i:03d}.png") for i in range(fx["n"])}
    captions = {f"caption number {i}" for i in range(0, fx["n"], 2)}
    free = {f"free text line {i}" for i in range(3000)}
    imported = {f"/elsewhere/photo{i}.jpg" for i in range(5000)}
    none = fx["root"] / "no-library-yet"
    all_ = {
        "index": Scenario("index", none, ["index", fx["imgs"], "--model", fx["model_a"], "--quiet"],
                          imgs, captions),
        "add-texts": Scenario("add-texts", fx["base"], ["add-texts", fx["texts"], "--quiet"],
                              imgs, captions | free),
        "import-embeddings": Scenario("import-embeddings", fx["base"],
                                      ["import-embeddings", fx["vecs"], fx["meta"], "--quiet"],
                                      imgs | imported, captions),
        # Large-library mode: the library's blobs move into vector files, then the import links its own.
        "import-ondisk": Scenario("import-ondisk", fx["base"],
                                  ["import-embeddings", fx["vecs"], fx["meta"], "--index-type",
                                   "ivf-pq-ondisk", "--quiet"], imgs | imported, captions),
        "use-model": Scenario("use-model", fx["base"], ["use-model", fx["model_b"], "--quiet"],
                              imgs, captions, model=str(fx["model_b"])),
        "finetune": Scenario("finetune", fx["base"],
                             ["finetune", "--epochs", "1", "--batch-size", "8", "--lr", "1e-4", "--apply",
                              "--quiet"], imgs, captions, model="/models/finetune-"),
    }  # fmt: skip
    return [all_[n] for n in names]


def check_json(lib: Path) -> tuple[int, str, str]:
    """`clipdex check --json` as a process: (exit code, stdout, stderr)."""
    res = subprocess.run(clipdex(lib, "check", "--json"), env=env(), capture_output=True, text=True)
    return res.returncode, res.stdout, res.stderr


def verify(lib: Path, sc: Scenario, model: str | None, check=check_json) -> tuple[list[str], int, int]:
    """(problems, lost, duplicated) of a library after a resumed command."""
    problems = []
    code, out, err = check(lib)
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [f"check failed: {err.strip()[-300:]}"], 0, 0
    if code != 0 or not report["healthy"]:
        problems.append(f"check: {report['problems']}")
    conn = sqlite3.connect(f"file:{lib / 'clipdex.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT path FROM items WHERE kind = 'image'")
        paths = [os.fsdecode(bytes(p)) for (p,) in rows]
        texts = [t for (t,) in conn.execute("SELECT text FROM items WHERE kind = 'text'")]
        spec = conn.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
    finally:
        conn.close()
    lost = len(sc.images - set(paths)) + len(sc.texts - set(texts))
    dup = (len(paths) - len(set(paths))) + (len(texts) - len(set(texts)))
    extra = len(set(paths) - sc.images) + len(set(texts) - sc.texts)
    if lost or dup or extra:
        problems.append(f"{lost} lost, {dup} duplicated, {extra} unexpected")
    if model and (spec is None or model not in spec[0]):
        problems.append(f"model is {spec[0] if spec else None}, expected {model}")
    return problems, lost, dup


def run_scenario(sc: Scenario, kills: int, work: Path, rng: random.Random, duration: float | None = None,
                 check=check_json) -> Tally:  # fmt: skip
    """Kill ``sc`` ``kills`` times at random moments in [0, duration] (default: one measured run)."""
    tally = Tally()

    def fresh(tag: str) -> Path:
        lib = work / f"{sc.name}-{tag}"
        shutil.rmtree(lib, ignore_errors=True)
        if sc.start.exists():
            shutil.copytree(sc.start, lib)
        return lib

    args = sc.args
    if duration is None:
        lib = fresh("timing")
        t0 = time.monotonic()
        subprocess.run(clipdex(lib, *args), env=env(), check=True, capture_output=True)
        duration = time.monotonic() - t0
    for k in range(kills):
        lib = fresh(str(k))
        delay = rng.uniform(0, duration)
        proc = subprocess.Popen(clipdex(lib, *args), env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tally.kills += 1
        resume = subprocess.run(clipdex(lib, *args), env=env(), capture_output=True, text=True)
        if resume.returncode != 0:
            tally.failed += 1
            tally.errors.append(f"kill {k} at {delay:.2f}s: resume failed: {resume.stderr.strip()[-300:]}")
            continue
        problems, lost, dup = verify(lib, sc, sc.model, check)
        tally.lost += lost
        tally.duplicated += dup
        if problems:
            tally.failed += 1
            tally.errors.append(f"kill {k} at {delay:.2f}s: " + "; ".join(problems))
        shutil.rmtree(lib, ignore_errors=True)
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    every = "index,add-texts,import-embeddings,import-ondisk,use-model,finetune"
    ap.add_argument("--commands", default=every)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="clipdex-crash-") as tmp:
        fx = make_fixture(Path(tmp) / "fx", a.images, a.seed)
        print(f"{'command':<18} {'kills':>5} {'failed':>6} {'lost':>5} {'duplicated':>10}")
        for sc in scenarios(fx, a.commands.split(",")):
            t = run_scenario(sc, a.kills, Path(tmp), rng)
            print(f"{sc.name:<18} {t.kills:>5} {t.failed:>6} {t.lost:>5} {t.duplicated:>10}", flush=True)
            for e in t.errors[:5]:
                print(f"    {e}", flush=True)


if __name__ == "__main__":
    main()
