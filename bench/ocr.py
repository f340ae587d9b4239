"""Reading text in pictures (`index --ocr`) and word search, on the user's paths.

    python bench/ocr.py [--n 48] [--arch ViT-B-32] [--library-size 100000] [--queries 200]

1. `clipdex index --ocr` in a fresh process vs RapidOCR alone on the same files (decode + read,
   one picture after another, as a script using RapidOCR would), side by side; and plain
   `clipdex index` (no OCR) on them, for the cost OCR adds. Each index run is on a third of the
   files and then all of them in fresh libraries: the difference is the rate past fixed costs
   (start-up, model load). Pictures: screenshots and photos of signs, 1280x720 and 1600x1200 JPEGs
   with English and Chinese lines (a CJK font from Debian: fonts-wqy-zenhei), random-init ARCH.
2. Word search at LIBRARY_SIZE pictures that all have text (synthetic lines of a vocabulary of
   5,000 words, a Zipf mix, plus Chinese): `Library.search(vector=…, words=WORD)` p50/p99 for a
   rare word, a common one and a Chinese word inside a line (goal p50 <= 5 ms), and the same
   query unfiltered, side by side.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

LINES = ["INVOICE 4471 TOTAL 88.20", "Platform 3 → Beijing West", "欢迎来到北京西站", "出口 EXIT 12",
         "Meeting notes: quarterly review", "营业时间 9:00-21:00", "Battery 87%  Wi-Fi",
         "SALE 50% OFF"]  # fmt: skip


def make_pictures(folder: Path, n: int) -> list[Path]:
    from helpers.textpics import cjk_font
    from PIL import Image, ImageDraw, ImageFont

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    font = ImageFont.truetype(cjk_font(), 44)
    out = []
    for i in range(n):
        size = (1280, 720) if i % 2 else (1600, 1200)
        base = np.random.default_rng(i).integers(120, 235, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(img)
        for j in range(rng.randint(1, 4)):
            draw.text((60, 80 + 120 * j), rng.choice(LINES), fill=(15, 15, 15), font=font)
        path = folder / f"pic{i:04d}.jpg"
        img.save(path, quality=88)
        out.append(path)
    return out


def reading_alone(paths: list[Path]) -> float:
    """RapidOCR on each file in turn (decode, the reader's size, read): pictures/s."""
    from clipdex.retrieval.decode import open_image
    from clipdex.retrieval.ocr import OCR_DRAFT, TextReader, prepare

    reader = TextReader()
    reader.read(prepare(open_image(paths[0], OCR_DRAFT)))  # warm-up
    t = time.perf_counter()
    for p in paths:
        reader.read(prepare(open_image(p, OCR_DRAFT)))
    return len(paths) / (time.perf_counter() - t)


def index_rate(work: Path, model: Path, paths: list[Path], extra: list[str], name: str) -> float:
    """`clipdex index` pictures/s past the fixed costs (a third, then all, in fresh libraries)."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    took = []
    for part, files in (("third", paths[: len(paths) // 3]), ("all", paths)):
        folder, lib = work / f"in-{name}-{part}", work / f"lib-{name}-{part}"
        folder.mkdir()
        for p in files:
            (folder / p.name).symlink_to(p)
        # the graphs are exported once, by a warm-up library, and copied: export is not measured
        shutil.copytree(work / "lib-warm" / "models", lib / "models")
        shutil.copy(work / "lib-warm" / "clipdex.db", lib / "clipdex.db")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clipdex.cli.main", "--library", str(lib), "index", str(folder),
                        "--quiet", *extra], check=True, env=env)  # fmt: skip
        took.append(time.perf_counter() - t)
    return (len(paths) - len(paths) // 3) / max(1e-9, took[1] - took[0])


def word_search(n: int, queries: int) -> None:
    from _planted import import_library, mixture

    from clipdex import Filter
    from clipdex.index.store.texts import TextRead
    from clipdex.library import Library
    from clipdex.results import TextLine

    rng = np.random.default_rng(1)
    vocab = [f"w{i:04d}" for i in range(5000)]
    zipf = 1 / np.arange(1, len(vocab) + 1)
    zipf /= zipf.sum()
    cities = ["北京西站", "上海虹桥", "广州南站", "深圳北站", "南京南站"]
    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-words-"))
    try:
        data = mixture(n + queries, 512, seed=0)
        t = time.perf_counter()
        lib_dir = import_library(work, data[:n], [f"/p/{i // 1000}/img{i}.jpg" for i in range(n)])
        with Library.open(lib_dir) as lib:
            lib.store.make_writable()
            box = ((0.1, 0.1), (0.9, 0.1), (0.9, 0.2), (0.1, 0.2))
            for start in range(1, n + 1, 5000):
                reads = []
                for item in range(start, min(n + 1, start + 5000)):
                    words = rng.choice(vocab, size=8, p=zipf)
                    lines = [TextLine(" ".join(words[:4]), box, 0.9), TextLine(" ".join(words[4:]), box, 0.9)]
                    if item % 50 == 0:
                        lines.append(TextLine(f"欢迎来到{cities[(item // 50) % 5]}候车", box, 0.9))
                    reads.append(TextRead(item, tuple(lines)))
                lib.store.texts.write(reads)
        print(f"word search: {n} pictures with text, built in {time.perf_counter() - t:.0f} s")
        qs = data[n:]
        cases = {"rare word (w0900)": "w0900", "common word (w0002)": "w0002",
                 "Chinese inside a line (虹桥)": "虹桥", "no filter": None}  # fmt: skip
        with Library.open(lib_dir) as lib:
            for name, words in cases.items():

                def one(q, words=words):
                    return lib.search(vector=q, k=10, words=words)

                for q in qs[:5]:
                    one(q)
                times = []
                for q in qs:
                    t = time.perf_counter()
                    hits = one(q)
                    times.append(time.perf_counter() - t)
                total = lib.count(filter=Filter(words=words)) if words else n
                print(f"  {name:30} matches {total:7d}: p50 {np.percentile(times, 50) * 1e3:6.2f} ms, "
                      f"p99 {np.percentile(times, 99) * 1e3:6.2f} ms ({len(hits)} hits)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--library-size", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()

    from clipdex.retrieval.model_init import init_model

    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-ocr-"))
    try:
        paths = make_pictures(work / "pictures", args.n)
        model = init_model(args.arch, work / "model", seed=0)
        warm = work / "warm"
        warm.mkdir()
        shutil.copy(paths[0], warm / "w.jpg")
        subprocess.run([sys.executable, "-m", "clipdex.cli.main", "--library", str(work / "lib-warm"),
                        "index", str(warm), "--model", str(model), "--quiet"], check=True,
                       env={**os.environ, "PYTHONPATH": str(HERE.parent)})  # fmt: skip
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"{args.arch}, {len(paths)} JPEGs with text (1280x720 and 1600x1200), {cores} cores, "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        alone = reading_alone(paths)
        with_ocr = index_rate(work, model, paths, ["--ocr"], "ocr")
        plain = index_rate(work, model, paths, [], "plain")
        print(f"  RapidOCR alone (decode + read)    {alone:7.2f} pictures/s")
        print(f"  clipdex index --ocr               {with_ocr:7.2f} pictures/s   ratio to RapidOCR alone "
              f"{with_ocr / alone:.2f} (goal >= 0.95)")  # fmt: skip
        print(f"  clipdex index (no OCR)            {plain:7.2f} pictures/s   OCR costs "
              f"{1 / with_ocr - 1 / plain:.3f} s per picture "
              f"({plain / with_ocr:.1f}x the plain run's time)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    word_search(args.library_size, args.queries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
