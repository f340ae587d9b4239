"""`Library.watch` on the real file system with the tiny model: what arrives, changes, moves and
goes is applied as `index` would, never half written, exactly once, beside other writers."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time

from helpers.corehelp import blocks_image, make_images
from helpers.watchhelp import image_paths, path_ids, wait_for, watching

from clipdex import Filter
from clipdex.library import Library

FAST = {"debounce": 0.3}


def model(tiny_model_dir) -> str:
    return f"local-dir:{tiny_model_dir}"


def names(lib_dir) -> list[str]:
    return sorted(os.path.relpath(os.fsdecode(p), os.fsdecode(lib_dir.parent)) for p in image_paths(lib_dir))


def test_copied_pictures_appear_in_new_nested_folders_and_hidden_ones_do_not(tiny_model_dir, tmp_path):
    photos, lib_dir = tmp_path / "photos", tmp_path / "lib"
    make_images(photos, ["a.png"])
    with watching(lib_dir, [photos], model(tiny_model_dir), **FAST) as w:
        assert names(lib_dir) == ["photos/a.png"]  # the first pass, like `index`
        make_images(tmp_path / "incoming", ["b.png", "c.jpg"], seed=1)
        (photos / "2024" / "trip").mkdir(parents=True)
        shutil.copy(tmp_path / "incoming" / "b.png", photos / "2024" / "trip" / "b.png")
        shutil.copy(tmp_path / "incoming" / "c.jpg", photos / "2024" / "c.jpg")
        make_images(photos / ".cache", ["hidden.png"], seed=2)
        make_images(photos, [".dot.png", "._apple.png"], seed=3)
        (photos / "notes.doc").write_text("not a picture")
        want = ["photos/2024/c.jpg", "photos/2024/trip/b.png", "photos/a.png"]
        wait_for(lambda: names(lib_dir) == want, what="the copies")
        time.sleep(0.8)  # hidden files would have been taken by now
        assert names(lib_dir) == want
        # Another process searches them: the FAISS files or the change log carry the batch.
        with Library.open(lib_dir) as reader:
            hits = reader.search(image=photos / "2024" / "trip" / "b.png", k=5)
            assert hits[0].path == str(photos / "2024" / "trip" / "b.png")
            assert hits[0].score > 0.999
    assert sum(b["added"] for b in w.batches) == 3, w.batches  # with the first pass
    assert not w.problems


def test_a_picture_written_slowly_is_taken_once_complete(tiny_model_dir, tmp_path):
    photos, lib_dir = tmp_path / "photos", tmp_path / "lib"
    photos.mkdir()
    buf = io.BytesIO()
    blocks_image(5, 256).save(buf, format="PNG")
    data = buf.getvalue()
    target = photos / "slow.png"
    with watching(lib_dir, [photos], model(tiny_model_dir), debounce=0.5) as w:
        with open(target, "wb") as f:  # a slow copy: a piece every 0.15 s, for ~1.5 s
            pieces = [data[i : i + len(data) // 10 + 1] for i in range(0, len(data), len(data) // 10 + 1)]
            for piece in pieces:
                f.write(piece)
                f.flush()
                time.sleep(0.15)
                assert image_paths(lib_dir) == []  # never taken while it grows
        wait_for(lambda: image_paths(lib_dir), what="the complete file")
        time.sleep(0.8)
    assert image_paths(lib_dir) == [os.fsencode(target)]
    assert w.batches == [{"added": 1, "updated": 0, "moved": 0, "removed": 0, "failed": 0}]
    with Library.open(lib_dir) as lib:
        record = lib.item(lib.resolve_item(target))
        assert record["size"] == len(data)
        assert lib.search(image=target, k=1)[0].score > 0.999  # the whole picture's vector


def test_changes_deletes_and_renames_as_index_would(tiny_model_dir, tmp_path):
    photos, lib_dir = tmp_path / "photos", tmp_path / "lib"
    make_images(photos / "album", ["x.png", "y.png"])
    make_images(photos, ["solo.png", "gone.png"], seed=1)
    (photos / "solo.txt").write_text("first caption")
    with watching(lib_dir, [photos], model(tiny_model_dir), **FAST) as w:
        lib = w.lib
        ids = path_ids(lib_dir)
        solo = ids[os.fsencode(photos / "solo.png")]
        assert [t for _, t in lib.captions(solo)] == ["first caption"]
        # A caption that changes updates its text (the image keeps its id).
        (photos / "solo.txt").write_text("second caption")
        wait_for(lambda: [t for _, t in lib.captions(solo)] == ["second caption"], what="the caption")
        # A folder renamed inside the tree is a move: same ids, no re-encoding.
        os.rename(photos / "album", photos / "album-2024")
        moved = {os.fsencode(photos / "album-2024" / n): ids[os.fsencode(photos / "album" / n)]
                 for n in ("x.png", "y.png")}  # fmt: skip
        wait_for(lambda: all(path_ids(lib_dir).get(p) == i for p, i in moved.items()), what="the move")
        # A file renamed keeps its id too; a deleted one goes.
        os.rename(photos / "solo.png", photos / "renamed.png")
        os.remove(photos / "gone.png")
        wait_for(lambda: os.fsencode(photos / "gone.png") not in path_ids(lib_dir), what="the deletion")
        wait_for(
            lambda: path_ids(lib_dir).get(os.fsencode(photos / "renamed.png")) == solo, what="the rename"
        )
        # A deleted folder removes its items.
        shutil.rmtree(photos / "album-2024")
        wait_for(lambda: names(lib_dir) == ["photos/renamed.png"], what="the folder's removal")
    done = {k: sum(b[k] for b in w.batches) for k in ("added", "moved", "removed")}
    assert done == {"added": 4, "moved": 3, "removed": 3}  # added: the first pass


def test_a_burst_lands_exactly_once(tiny_model_dir, tmp_path):
    photos, lib_dir = tmp_path / "photos", tmp_path / "lib"
    photos.mkdir()
    with watching(lib_dir, [photos], model(tiny_model_dir), debounce=0.3, batch_size=16) as w:
        make_images(photos / "import", [f"{n:03d}.png" for n in range(200)], seed=9)
        wait_for(lambda: len(image_paths(lib_dir)) >= 200, timeout=60, what="the burst")
        time.sleep(0.6)
        paths = image_paths(lib_dir)
        assert len(paths) == len(set(paths)) == 200
        with Library.open(lib_dir) as reader:
            assert reader.count() == 200
            hits = reader.search(image=photos / "import" / "123.png", k=3)
            assert hits[0].path == str(photos / "import" / "123.png")
    assert sum(b["added"] for b in w.batches) == 200
    assert max(b["added"] for b in w.batches) <= 16  # batched, one transaction each


OTHER_WRITER = """
import sys
from clipdex import Filter
from clipdex.library import Library
with Library.open(sys.argv[1]) as lib:
    assert len(lib.add_texts(["a red bus", "a green field"])) == 2
    assert lib.index(sys.argv[2]).added == 2
    assert len(lib.add_texts(["a blue boat"])) == 1
"""


def test_other_writers_succeed_while_it_watches(tiny_model_dir, tmp_path):
    photos, other, lib_dir = tmp_path / "photos", tmp_path / "other", tmp_path / "lib"
    make_images(photos, ["a.png"])
    make_images(other, ["o1.png", "o2.png"], seed=4)
    with watching(lib_dir, [photos], model(tiny_model_dir), **FAST):

        def keep_arriving() -> None:  # batches keep committing meanwhile
            for n in range(30):
                make_images(photos / "live", [f"{n}.png"], seed=100 + n)
                time.sleep(0.1)

        arriving = threading.Thread(target=keep_arriving)
        arriving.start()
        try:  # another process: the writer lock is really contended
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "CLIPDEX_LOCK_TIMEOUT": "3"}
            writer = subprocess.run([sys.executable, "-c", OTHER_WRITER, str(lib_dir), str(other)], env=env,
                                    capture_output=True, text=True, timeout=120)  # fmt: skip
            assert writer.returncode == 0, writer.stderr
        finally:
            arriving.join()
        wait_for(lambda: len(image_paths(lib_dir)) == 1 + 30 + 2, timeout=20, what="every picture")
    paths = image_paths(lib_dir)
    assert len(paths) == len(set(paths))
    with Library.open(lib_dir) as reader:
        assert reader.count("texts") == 3


def test_a_vanished_folder_is_waited_for_and_rescanned_when_back(tiny_model_dir, tmp_path):
    disk, home, lib_dir = tmp_path / "disk", tmp_path / "home", tmp_path / "lib"
    make_images(disk, ["d1.png", "d2.png"])
    make_images(home, ["h.png"], seed=1)
    with watching(lib_dir, [disk, home], model(tiny_model_dir), **FAST) as w:
        os.rename(disk, tmp_path / "unmounted")  # the disk goes away
        wait_for(lambda: any("is gone" in n for n in w.notices), what="the notice")
        make_images(home, ["h2.png"], seed=2)  # the other folder is still followed
        wait_for(lambda: len(image_paths(lib_dir)) == 4, what="h2")
        assert os.fsencode(disk / "d1.png") in image_paths(lib_dir)  # its pictures stay
        make_images(tmp_path / "unmounted", ["d3.png"], seed=3)  # changed while away
        os.rename(tmp_path / "unmounted", disk)
        wait_for(lambda: os.fsencode(disk / "d3.png") in image_paths(lib_dir), what="the rescan")
        make_images(disk, ["d4.png"], seed=4)  # and followed again
        wait_for(lambda: os.fsencode(disk / "d4.png") in image_paths(lib_dir), what="d4")
    assert sum("is gone" in n for n in w.notices) == 1
    assert any("is back" in n for n in w.notices)
    assert len(image_paths(lib_dir)) == 6


def test_a_missing_folder_is_refused_before_anything(tiny_model_dir, tmp_path):
    import pytest

    from clipdex.errors import ClipdexError

    with Library.open(tmp_path / "lib", create=True, model=model(tiny_model_dir)) as lib:
        with pytest.raises(ClipdexError, match="folder not found"):
            lib.watch([tmp_path / "nope"])


def test_a_video_copied_in_is_indexed_as_its_moments_and_removed_with_its_file(tiny_model_dir, tmp_path):
    from helpers.videos import three_scenes

    photos, lib_dir = tmp_path / "photos", tmp_path / "lib"
    three_scenes(photos / "early" / "before.mkv")  # there before the watch: its first pass finds it
    three_scenes(tmp_path / "made" / "clip.mkv")

    def moments() -> dict:
        with Library.open(lib_dir) as reader:
            if reader.count() == 0:
                return {}
            hits = reader.search("x", k=10, filter=Filter(media="videos"))
            return {(os.path.relpath(h.path, photos), h.t, h.t_end): h.id for h in hits}

    scenes = [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    with watching(lib_dir, [photos], model(tiny_model_dir), **FAST):
        wait_for(lambda: len(moments()) == 3, what="the first pass's video")
        shutil.copy(tmp_path / "made" / "clip.mkv", photos / "clip.mkv")
        got = wait_for(lambda: len(m := moments()) == 6 and m, what="the video's moments")
        assert sorted(k for k in got if k[0] == "clip.mkv") == [("clip.mkv", *s) for s in scenes]
        # Moved into a folder made just now (its files heard by walking it): the moments keep their ids.
        (photos / "sub").mkdir()
        (photos / "clip.mkv").rename(photos / "sub" / "moved.mkv")
        moved = wait_for(lambda: (m := moments()) and all(k[0] != "clip.mkv" for k in m) and m,
                         what="the video's move")  # fmt: skip
        assert {i for k, i in moved.items() if k[0] == os.path.join("sub", "moved.mkv")} == {
            i for k, i in got.items() if k[0] == "clip.mkv"
        }
        (photos / "sub" / "moved.mkv").unlink()
        wait_for(lambda: len(moments()) == 3, what="the video's removal")
