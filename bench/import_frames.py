"""`import-embeddings` with video frame rows (t/t_end) against the same rows as pictures.

    python bench/import_frames.py [--n 200000] [--dim 64] [--frames 0.2] [--per-video 40]

Writes N float16 unit vectors and three parquet metadata files for them, then imports each into a
new library (random-init local-dir model, in-process), side by side in one run:
  pictures      N picture rows, no t/t_end columns (the import as it was)
  null spans    the same N rows with all-null t/t_end columns (what `clipdex embed` writes for
                a folder of pictures)
  frames        the same N rows where a fraction (--frames) are frames of videos of --per-video
                frames each
then into the frames library again: the same file (every video unchanged), and one where every
frame vector moved (every video replaced whole). Prints seconds and the ratio to `pictures`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--frames", type=float, default=0.2, help="fraction of rows that are video frames")
    ap.add_argument("--per-video", type=int, default=40)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clipdex.library.facade import Library
    from clipdex.retrieval.model_init import init_model

    work = Path(tempfile.mkdtemp(prefix="clipdex-bench-frames-"))
    try:
        n, dim = args.n, args.dim
        rng = np.random.default_rng(0)
        vecs = rng.standard_normal((n, dim), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        np.save(work / "v.npy", vecs.astype(np.float16))
        moved = vecs + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
        np.save(work / "moved.npy", (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float16))
        paths = [f"/data/photos/{i:09d}.jpg" for i in range(n)]
        pq.write_table(pa.table({"path": paths}), work / "pictures.parquet")
        nulls = pa.nulls(n, pa.float64())
        pq.write_table(pa.table({"path": paths, "t": nulls, "t_end": nulls}), work / "nulls.parquet")
        # Frame rows spread through the file (every k-th row), each video's frames contiguous.
        k = max(1, round(1 / args.frames))
        t = np.full(n, np.nan)
        frame_rows = np.arange(0, n, k)
        per = args.per_video
        t[frame_rows] = (np.arange(len(frame_rows)) % per) * 2.0
        vpaths = list(paths)
        for j, r in enumerate(frame_rows.tolist()):
            vpaths[r] = f"/data/clips/{j // per:07d}.mp4"
        spans = {"t": pa.array(t, from_pandas=True), "t_end": pa.array(t + 2.0, from_pandas=True)}
        pq.write_table(pa.table({"path": vpaths, **spans}), work / "frames.parquet")
        cfg = work / "model.json"
        cfg.write_text(json.dumps({
            "embed_dim": dim, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
        }))  # fmt: skip
        model = f"local-dir:{init_model(str(cfg), work / 'model', seed=0)}"
        print(f"{n} rows x {dim}; {len(frame_rows)} frame rows in videos of {per} frames")

        def timed(lib_dir: Path, npy: str, meta: str) -> tuple[float, object]:
            with Library.open(lib_dir, create=True, model=model, device="cpu") as lib:
                start = time.perf_counter()
                got = lib.import_embeddings(work / npy, work / meta)
                return time.perf_counter() - start, got

        base, _ = timed(work / "lib-pictures", "v.npy", "pictures.parquet")
        rows = [("pictures", base, "")]
        s, _ = timed(work / "lib-nulls", "v.npy", "nulls.parquet")
        rows.append(("null spans", s, ""))
        s, got = timed(work / "lib-frames", "v.npy", "frames.parquet")
        rows.append(("frames", s, f"imported {got.imported}"))
        s, got = timed(work / "lib-frames", "v.npy", "frames.parquet")
        assert got.unchanged == n, got
        rows.append(("re-import", s, f"unchanged {got.unchanged}"))
        s, got = timed(work / "lib-frames", "moved.npy", "frames.parquet")
        assert got.updated == n, got
        rows.append(("all moved", s, f"updated {got.updated} (pictures in place, videos replaced)"))
        for label, secs, note in rows:
            print(f"  {label:<12}{secs:7.2f} s  {secs / base:5.2f}x pictures  {note}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
