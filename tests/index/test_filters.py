"""Filtered search (clipdex.index.filters), checked against brute force on the stored vectors."""

from __future__ import annotations

import csv
import datetime as dt
import os
import time

import numpy as np
import pytest
from helpers.corehelp import brute_force, json_lines, make_images, ok, run
from PIL import Image

from clipdex import Filter, Library
from clipdex.errors import ClipdexError
from clipdex.index import filters
from clipdex.index.store import schema as schema_mod
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE, TEXT


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


# ---- filters against brute force ------------------------------------------------------------------
N = 20_000
BASE = 1_600_000_000.0


def _planted_library(tmp_path, tiny_model_dir, index_type):
    """N clustered 64-d image vectors in a folder tree (/r/a/b/c/d: 10%, 1%, 0.1%, 1 item), each
    dated one hour apart in a shuffled order, 30% captioned."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((50, 64))
    vecs = centres[rng.integers(0, 50, N)] + 0.35 * rng.standard_normal((N, 64))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    i = np.arange(N)
    paths = [f"/r/{a}/{b}/{c}/{d}/img{n}.jpg" for n, a, b, c, d in
             zip(i, i % 10, (i // 10) % 10, (i // 100) % 10, i // 1000)]  # fmt: skip
    np.save(tmp_path / "v.npy", vecs)
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"])
        w.writerows([p] for p in paths)
    lib = Library.open(tmp_path / f"lib-{index_type}", create=True, model=str(tiny_model_dir))
    with lib.writing():
        lib.indexes.set_index_type(index_type)
    lib.import_embeddings(tmp_path / "v.npy", tmp_path / "m.csv")
    ids, _ = lib.store.vectors.all(IMAGE)
    taken = BASE + 3600.0 * rng.permutation(N)
    captioned = rng.random(N) < 0.3
    with lib.writing(), lib.store.transaction():
        lib.store.conn.executemany(
            "UPDATE items SET taken_at = ? WHERE id = ?", zip(taken.tolist(), ids.tolist())
        )
        lib.store.items.insert(TEXT, "sidecar", vecs[captioned][:, ::-1].copy(),
                               texts=["c"] * int(captioned.sum()),
                               image_ids=ids[captioned].tolist())  # fmt: skip
        lib.store.bump_generation()
    lib.indexes.forget()
    truth = {"ids": ids, "vecs": vecs, "paths": paths, "taken": taken, "captioned": captioned}
    return lib, truth, rng


def _random_filter(rng, truth, selectivity):
    """A random filter keeping about `selectivity` of the items, and its mask computed here."""
    count = max(1, int(round(selectivity * N)))
    shape = rng.integers(0, 3)
    if shape == 0:  # a date range holding exactly `count` items
        order = np.sort(truth["taken"])
        lo = int(rng.integers(0, N - count + 1))
        after = dt.datetime.fromtimestamp(order[lo])
        before = order[lo + count] if lo + count < N else None
        f = Filter(after=after.isoformat(), before=before)
        mask = (truth["taken"] >= order[lo]) & ((truth["taken"] < before) if before else True)
    else:  # folders at the level matching the selectivity, maybe with a date bound and captions
        depth = {0.0001: 4, 0.001: 3, 0.01: 2, 0.1: 1}.get(selectivity)
        if depth is None:  # 50% / 100%: five or ten top folders
            tops = rng.permutation(10)[: max(1, int(round(10 * selectivity)))]
            roots = [f"/r/{t}" for t in tops]
        else:
            parts = [str(rng.integers(0, 10)) for _ in range(depth)]
            if depth == 4:
                parts[-1] = str(rng.integers(0, 20))
            roots = ["/r/" + "/".join(parts)]
        captioned = None if shape == 1 else bool(rng.integers(0, 2))
        f = Filter(under=roots, captioned=captioned)
        mask = np.array([any(p.startswith(r + "/") for r in roots) for p in truth["paths"]])
        if captioned is not None:
            mask &= truth["captioned"] == captioned
    return f, mask


@pytest.mark.parametrize("index_type", ["flat", "ivf-fp16"])
@pytest.mark.parametrize("exact_max", [filters.EXACT_MAX, 0])  # 0: every filter goes through FAISS
def test_filtered_search_matches_brute_force(tmp_path, tiny_model_dir, index_type, exact_max, monkeypatch):
    monkeypatch.setattr(filters, "EXACT_MAX", exact_max)
    lib, truth, rng = _planted_library(tmp_path, tiny_model_dir, index_type)
    with lib:
        assert lib.indexes.get(IMAGE).info["type"] == index_type
        recalls = []
        for selectivity in (0.0001, 0.001, 0.01, 0.1, 0.5, 1.0):
            for _ in range(4):
                f, mask = _random_filter(rng, truth, selectivity)
                q = truth["vecs"][rng.integers(0, N)] + 0.1 * rng.standard_normal(64).astype(np.float32)
                k = int(rng.choice([1, 10, 50]))
                hits = [(h.id, h.score) for h in lib.search(vector=q, k=k, filter=f)]
                want = brute_force(truth["ids"][mask], truth["vecs"][mask], _unit(q), k)
                assert len(hits) == min(k, int(mask.sum()))  # never fewer than k while more match
                allowed = set(truth["ids"][mask].tolist())
                assert all(i in allowed for i, _ in hits)
                exact = dict(brute_force(truth["ids"], truth["vecs"], _unit(q), N))
                assert all(s == pytest.approx(exact[i], abs=1e-6) for i, s in hits)  # exact cosines
                if index_type == "flat":
                    assert [i for i, _ in hits] == [i for i, _ in want]
                elif want:
                    recalls.append(len({i for i, _ in hits} & {i for i, _ in want}) / len(want))
        if recalls:
            assert np.mean(recalls) >= 0.9, recalls


def test_min_score_and_text_target_filters(tmp_path, tiny_model_dir):
    lib, truth, rng = _planted_library(tmp_path, tiny_model_dir, "flat")
    with lib:
        q = truth["vecs"][5]
        full = lib.search(vector=q, k=40)
        cut = full[20].score
        kept = lib.search(vector=q, k=40, filter=Filter(min_score=cut))
        assert [h.id for h in kept] == [h.id for h in full if h.score >= cut] and len(kept) >= 21
        # texts: the folder condition applies to the caption's image
        hits = lib.search(vector=q[::-1].copy(), k=5, target="texts", filter=Filter(under="/r/3"))
        images = lib.store.items.get([lib.store.items.get([h.id])[h.id].image_id for h in hits])
        assert len(hits) == 5 and all(it.path.startswith(b"/r/3/") for it in images.values())


def test_date_filter_on_an_old_schema_asks_for_repair(tmp_path, monkeypatch):
    monkeypatch.setattr(schema_mod, "MIGRATIONS", schema_mod.MIGRATIONS[:2])
    monkeypatch.setattr(schema_mod, "SCHEMA_VERSION", 2)
    old = Store(tmp_path, create=True)
    assert not old.has_columns("items", "taken_at")
    with pytest.raises(ClipdexError, match=r"clipdex check --repair"):
        old.selection.matching_ids(IMAGE, Filter(after="2024-01-01"))
    assert len(old.selection.matching_ids(IMAGE, Filter(under="/x"))) == 0  # folders need no new column
    old.close()


# ---- dates and sizes read at index time ------------------------------------------------------------
def _exif_jpeg(path, when: str | None, offset: str | None = None, orientation: int = 1, size=(96, 48)):
    img = Image.new("RGB", size, (200, 30, 30))
    ex = Image.Exif()
    if orientation != 1:
        ex[0x0112] = orientation
    ifd = ex.get_ifd(0x8769)
    if when:
        ifd[0x9003] = when
    if offset:
        ifd[0x9011] = offset
    img.save(path, exif=ex)


def test_photo_dates_from_exif_else_mtime(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        pics = tmp_path / "pics"
        pics.mkdir()
        _exif_jpeg(pics / "zoned.jpg", "2021:05:04 10:00:00", "+02:00", orientation=6)  # 08:00 UTC
        _exif_jpeg(pics / "local.jpg", "2021:05:04 10:00:00")  # 10:00 New York = 14:00 UTC
        _exif_jpeg(pics / "plain.jpg", None)
        mtime = dt.datetime(2019, 1, 2, 3, 4, 5).timestamp()
        os.utime(pics / "plain.jpg", (mtime, mtime))
        lib = tmp_path / "lib"
        ok("--library", lib, "index", pics, "--model", tiny_model_dir, "--quiet")

        def names(*args):
            res = ok("--library", lib, "search", "photo", "-k", "10", "--json", *args)
            return sorted(os.path.basename(r["path"]) for r in json_lines(res.stdout))

        assert names("--after", "2021-05-04T08:00:00+00:00") == ["local.jpg", "zoned.jpg"]
        assert names("--after", "2021-05-04T08:00:01Z") == ["local.jpg"]
        assert names("--after", "2021-05-04T10:00") == ["local.jpg"]  # local time, as EXIF's own
        assert names("--before", "2021-05-04T10:00") == ["plain.jpg", "zoned.jpg"]
        assert names("--after", "2019-01-02", "--before", "2019-01-03") == ["plain.jpg"]
        assert names("--after", "2019-01-02T03:04:06") == ["local.jpg", "zoned.jpg"]
        s = Store(lib)
        dims = dict(s.conn.execute("SELECT path, width || 'x' || height FROM items WHERE kind = 'image'"))
        s.close()
        assert dims[os.fsencode(pics / "zoned.jpg")] == "48x96"  # rotated by EXIF: sides swap
        assert dims[os.fsencode(pics / "plain.jpg")] == "96x48"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_cli_filters_under_and_captioned(tmp_path, tiny_model_dir):
    paths = make_images(tmp_path / "pics", ["a/1.png", "a/2.png", "ab/3.png", "b/4.png", "b/5.png"])
    (tmp_path / "pics" / "b" / "4.txt").write_text("a caption")
    lib = tmp_path / "lib"
    ok("--library", lib, "index", tmp_path / "pics", "--model", tiny_model_dir, "--quiet")

    def names(*args):
        res = ok("--library", lib, "search", "--image", paths["a/1.png"], "--paths", *args)
        return sorted(os.path.relpath(p, tmp_path / "pics") for p in res.stdout.splitlines())

    assert names("--under", tmp_path / "pics" / "a") == ["a/1.png", "a/2.png"]  # not ab/
    assert names("--under", tmp_path / "pics" / "a", "--under", tmp_path / "pics" / "b") == [
        "a/1.png", "a/2.png", "b/4.png", "b/5.png"]  # fmt: skip
    assert names("--captioned") == ["b/4.png"]
    assert len(names("--uncaptioned")) == 4
    assert names("--under", tmp_path / "nowhere") == []
    assert run("--library", lib, "search", "x", "--after", "yesterday").exit_code == 2
