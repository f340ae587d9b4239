"""Videos in a library: a moment per scene (merged spans), stills find their scene, --media,
--per-video, moves keep ids, changes redo the video whole, bad files are remembered failures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers.corehelp import json_lines, make_images, ok, run
from helpers.videos import FORMATS, audio_only, has_encoder, make_video, scene, three_scenes

from clipdex.index.store.database import Store

FORMS = [ext for ext, codec in FORMATS.items() if has_encoder(codec)]
SCENES = {".mp4": (2, 4, 5), ".mkv": (0, 1, 3), ".webm": (3, 5, 1)}  # scenes at 0, 4 and 8 s


def frames(lib: Path) -> list[tuple]:
    """(id, path name, t, t_end) of every video moment, by id."""
    store = Store(lib)
    try:
        rows = store.conn.execute("SELECT id, path, t, t_end FROM items WHERE source = 'video' ORDER BY id")
        return [(i, os.path.basename(bytes(p)).decode(), t, e) for i, p, t, e in rows]
    finally:
        store.close()


def index_json(lib: Path, *args: object) -> dict:
    (out,) = json_lines(ok("--library", lib, "index", *args, "--json").stdout)
    return out


@pytest.fixture
def videos(tmp_path, tiny_model_dir) -> tuple[Path, Path]:
    root, lib = tmp_path / "media", tmp_path / "lib"
    for ext in FORMS:
        three_scenes(root / f"three{ext}", SCENES[ext])
    make_video(
        root / "static.mp4", [(scene(0), 20.0)]
    )  # one shot, 20 s: one moment (scene 0 only at 0 s elsewhere)
    make_images(root, ["photo.png"])
    out = index_json(lib, root, "--model", tiny_model_dir)
    assert out["added"] == len(FORMS) + 2 and out["failed"] == 0
    return root, lib


def test_each_scene_is_one_moment_and_a_still_finds_its_span(videos, tmp_path):
    root, lib = videos
    got = frames(lib)
    for ext in FORMS:  # a frame every 2 s, merged: three moments of 4 s each
        spans = [(t, e) for _, name, t, e in got if name == f"three{ext}"]
        assert spans == [(0.0, 4.0), (4.0, 8.0), (8.0, pytest.approx(12.0, abs=0.3))], (ext, spans)
    assert [(t, e) for _, name, t, e in got if name == "static.mp4"] == [(0.0, pytest.approx(20.0, abs=0.3))]
    where: dict[int, set] = {0: {("static.mp4", 0.0)}}  # scene -> the moments (video, t) showing it
    for ext in FORMS:
        for n, start in zip(SCENES[ext], (0.0, 4.0, 8.0)):
            where.setdefault(n, set()).add((f"three{ext}", start))
    for n, moments in sorted(where.items()):
        still = tmp_path / f"still{n}.png"
        scene(n).save(still)
        (top, *_) = json_lines(ok("--library", lib, "search", "--image", still, "--json", "--media",
                                  "videos").stdout)  # fmt: skip
        assert top["modality"] == "video" and (Path(top["path"]).name, top["t"]) in moments, (n, top)
        length = 20.0 if top["path"].endswith("static.mp4") else 4.0
        assert top["t_end"] == pytest.approx(top["t"] + length, abs=0.3)


def test_media_filters_paths_table_and_per_video(videos, tmp_path):
    root, lib = videos
    scene(4).save(tmp_path / "q.png")
    base = ("--library", lib, "search", "--image", tmp_path / "q.png", "-k", "50")
    photos = json_lines(ok(*base, "--media", "photos", "--json").stdout)
    assert [Path(r["path"]).name for r in photos] == ["photo.png"] and photos[0]["modality"] == "image"
    vids = json_lines(ok(*base, "--media", "videos", "--json").stdout)
    assert vids and all(r["modality"] == "video" and "t" in r and "t_end" in r for r in vids)
    assert len(json_lines(ok(*base, "--json").stdout)) == len(photos) + len(vids)
    best = json_lines(ok(*base, "--media", "videos", "--per-video", "1", "--json").stdout)
    names = [r["path"] for r in best]
    assert len(names) == len(set(names)) == len(FORMS) + 1
    assert best[0]["path"] == vids[0]["path"] and best[0]["id"] == vids[0]["id"]  # each at its best moment
    table = ok(*base, "--media", "videos", "-k", "3").stdout.splitlines()
    assert " @ 0:" in table[0] and table[0].split()[2] == vids[0]["path"]
    listed = ok(*base, "--media", "videos", "--paths").stdout.splitlines()
    assert listed == [r["path"] for r in vids]  # the video's path, once per hit


def test_similar_on_a_frame_and_duplicates_skip_a_videos_repeats(videos):
    root, lib = videos
    moments = frames(lib)
    first = moments[0][0]
    hits = json_lines(ok("--library", lib, "similar", str(first), "--json").stdout)
    assert hits[0]["id"] == first and hits[0]["modality"] == "video"
    shutil.copy(root / "static.mp4", root / "static copy.mp4")
    index_json(lib, root)
    groups = json_lines(ok("--library", lib, "duplicates", "--threshold", "0.99", "--json").stdout)
    for g in groups:  # never a group of one video's own moments
        assert len({i["path"] for i in g["items"]}) > 1
    assert any(
        {Path(i["path"]).name for i in g["items"]} >= {"static.mp4", "static copy.mp4"} for g in groups
    )


def test_moved_video_keeps_ids_and_changed_video_is_redone_whole(videos):
    root, lib = videos
    before = {t: i for i, name, t, _ in frames(lib) if name == "three.mp4"}
    (root / "sub").mkdir()
    os.rename(root / "three.mp4", root / "sub" / "moved.mp4")
    out = index_json(lib, root)
    assert (out["moved"], out["added"], out["removed"]) == (1, 0, 0)
    assert {t: i for i, name, t, _ in frames(lib) if name == "moved.mp4"} == before
    make_video(root / "sub" / "moved.mp4", [(scene(0), 6.0)])  # new content: one black shot
    out = index_json(lib, root)
    assert out["updated"] == 1 and out["frames"] == 1
    now = [(i, t, e) for i, name, t, e in frames(lib) if name == "moved.mp4"]
    assert (
        len(now) == 1
        and now[0][0] not in before.values()
        and now[0][1:] == (0.0, pytest.approx(6.0, abs=0.3))
    )
    assert index_json(lib, root)["unchanged"] == len(FORMS) + 2  # nothing to redo
    os.remove(root / "sub" / "moved.mp4")
    assert index_json(lib, root)["removed"] == 1 and not [f for f in frames(lib) if f[1] == "moved.mp4"]


def test_bad_videos_are_remembered_failures_with_one_line(tmp_path, tiny_model_dir):
    from PIL import Image

    root, lib = tmp_path / "bad", tmp_path / "lib"
    root.mkdir()
    good = three_scenes(tmp_path / "good.mp4").read_bytes()
    (root / "zero.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "notes.mkv").write_text("this is text\n" * 30)
    audio_only(root / "sound.mp4")
    Image.new("RGB", (16, 16), "red").save(root / "picture.webm", format="PNG")
    make_images(root, ["ok.png"])
    res = ok("--library", lib, "index", root, "--model", tiny_model_dir, "--json")
    out = json_lines(res.stdout)[0]
    assert (out["added"], out["failed"]) == (1, 5)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 5 and "Traceback" not in res.stderr
    for name, needle in [("zero.mp4", "empty"), ("truncated.mp4", "truncated"), ("notes.mkv", "not a video"),
                         ("sound.mp4", "audio only"), ("picture.webm", "PNG")]:  # fmt: skip
        assert any(name in line and needle in line for line in lines), (name, lines)
    again = ok("--library", lib, "index", root, "--json")
    assert json_lines(again.stdout)[0]["skipped_failed"] == 5 and again.stderr.strip() == ""


def test_no_video_skips_and_keeps_videos(videos):
    root, lib = videos
    n = len(frames(lib))
    make_video(root / "new.mp4", [(scene(1), 2.0)])
    os.remove(root / "static.mp4")
    out = index_json(lib, root, "--no-video")
    assert (out["added"], out["removed"], out["unchanged"]) == (0, 0, 1) and len(frames(lib)) == n
    res = run("--library", lib, "index", root, "--video-interval", "0")
    assert res.exit_code == 2


def test_use_model_re_embeds_moments_from_their_frames(videos, tiny_model_dir2):
    root, lib = videos
    before = frames(lib)
    store = Store(lib)
    old = store.vectors.get([i for i, *_ in before])
    store.close()
    ok("--library", lib, "use-model", tiny_model_dir2, "--quiet")
    assert frames(lib) == before  # same ids and spans
    store = Store(lib)
    new = store.vectors.get([i for i, *_ in before])
    store.close()
    assert not (old == new).all(axis=1).any()
    (top, *_) = json_lines(ok("--library", lib, "similar", str(before[1][0]), "--json").stdout)
    assert top["modality"] == "video"
