"""The thumbnail cache of `clipdex serve`: size, orientation, keys, bounded size, its location."""

from __future__ import annotations

import io
import os

from helpers.corehelp import blocks_image
from PIL import Image

from clipdex.serve.thumbs import MAX_SIDE, ThumbCache, cache_folder, make_thumbnail


def test_thumbnail_keeps_aspect_and_fits(tmp_path):
    path = tmp_path / "wide.png"
    blocks_image(1, 64).resize((1000, 500)).save(path)
    img = Image.open(io.BytesIO(make_thumbnail(str(path))))
    assert img.format == "JPEG" and img.size == (MAX_SIDE, MAX_SIDE // 2)


def test_cache_is_keyed_by_file_state_and_bounded(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    paths = []
    for i in range(12):
        p = pics / f"{i}.png"
        blocks_image(i, 64).resize((300, 300)).save(p)
        paths.append(p)
    one = len(make_thumbnail(str(paths[0])))
    cache = ThumbCache(tmp_path / "thumbs", budget=4 * one)
    for i, p in enumerate(paths):
        cache.get(i, os.fsencode(p), p.stat())
        total = sum(f.stat().st_size for f in (tmp_path / "thumbs").iterdir())
        assert total <= 4 * one * 1.5  # bounded (thumbnails differ a little in size)
    kept = {f.name.split("-")[0] for f in (tmp_path / "thumbs").iterdir()}
    assert "11" in kept and "0" not in kept  # the oldest went first
    # a changed file gets a new thumbnail under a new key
    old = cache.get(11, os.fsencode(paths[11]), paths[11].stat())
    blocks_image(99, 64).resize((300, 300)).save(paths[11])
    new = cache.get(11, os.fsencode(paths[11]), paths[11].stat())
    assert new != old


def test_cache_survives_files_vanishing_while_it_measures_itself(tmp_path, monkeypatch):
    """Two requests making thumbnails at once: one lists the folder while the other's temporary
    file is renamed away (a real failure: the thumbnail request answered 500). Measuring and
    evicting skip what vanished; the thumbnail is still served and stored."""
    from clipdex.serve import thumbs

    pic = tmp_path / "a.png"
    blocks_image(3, 64).resize((300, 300)).save(pic)
    folder = tmp_path / "thumbs"
    folder.mkdir()
    (folder / "old.jpg").write_bytes(b"x" * 100)
    real_scandir = os.scandir

    def racing_scandir(path):
        entries = list(real_scandir(path))
        (folder / ".thumb.other").write_bytes(b"y")  # listed, then renamed by another thread
        entries += [e for e in real_scandir(path) if e.name == ".thumb.other"]
        os.rename(folder / ".thumb.other", folder / "other.jpg")
        return iter(entries)

    monkeypatch.setattr(thumbs.os, "scandir", racing_scandir)
    cache = ThumbCache(folder, budget=150)  # the first store measures, then evicts
    data = cache.get(1, os.fsencode(pic), pic.stat())
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    assert not (folder / "old.jpg").exists()  # evicted: the oldest, over the budget


def test_cache_folder_inside_the_library_or_in_the_user_cache(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    lib.mkdir()
    assert cache_folder(lib) == lib / "thumbnails"
    other = tmp_path / "lib2"
    other.mkdir()
    (other / "thumbnails").write_text("not a folder")  # as if the library were not writable
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = cache_folder(other)
    assert folder.parent == tmp_path / "cache" / "clipdex" / "thumbnails"
    assert cache_folder(other) == folder and cache_folder(lib) != folder  # one per library
