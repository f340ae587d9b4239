"""Decoding videos with PyAV: sampled frames at the right times, rotation, creation time, and one
clear reason for each kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.videos import FORMATS, audio_only, has_encoder, make_video, scene, three_scenes

from clipdex.results import clock
from clipdex.retrieval.video import VideoError, VideoReader, frame_at

FORMS = [ext for ext, codec in FORMATS.items() if has_encoder(codec)]


def mean_colour(picture) -> np.ndarray:
    return np.asarray(picture, np.float64).mean(axis=(0, 1))


@pytest.mark.parametrize("ext", FORMS)
def test_frames_every_interval_first_always_scaled_small(tmp_path, ext):
    path = three_scenes(tmp_path / f"v{ext}", seeds=(0, 1, 0))  # black, white, black at 0/4/8 s
    with VideoReader(path) as reader:
        assert reader.info.duration == pytest.approx(12.0, abs=0.3)
        frames = list(reader.frames(interval=3.0, short_side=32))
    assert [f.t for f in frames] == pytest.approx([0.0, 3.0, 6.0, 9.0], abs=0.01)
    assert all(min(f.picture.size) == 32 and f.picture.size == (48, 32) for f in frames)
    brightness = [mean_colour(f.picture).mean() for f in frames]
    assert brightness[0] < 30 and brightness[1] < 30 and brightness[2] > 220 and brightness[3] < 30
    assert reader.end == pytest.approx(12.0, abs=0.3)


def test_rotation_and_creation_time_are_honoured(tmp_path):
    marked = np.zeros((64, 96, 3), np.uint8)
    marked[:16, :24] = 255  # a white mark top left
    from PIL import Image

    path = make_video(tmp_path / "r.mp4", [(Image.fromarray(marked), 1.0)], rotate=90,
                      creation_time="2023-05-01T10:00:00.000000Z")  # fmt: skip
    with VideoReader(path) as reader:
        (first,) = list(reader.frames(interval=5.0, short_side=64))
        assert reader.info.created_at == 1682935200.0
        assert reader.shown_size == (64, 96)
    pixels = np.asarray(first.picture)
    assert first.picture.size == (64, 96)  # portrait: turned a quarter counter-clockwise
    assert pixels[-8:, :8].mean() > 200 and pixels[:8, :8].mean() < 50  # the mark is now bottom left


def test_frame_at_seeks_to_the_moment(tmp_path):
    path = three_scenes(tmp_path / "v.mp4", seeds=(0, 1, 0))
    assert mean_colour(frame_at(path, 5.0)).mean() > 220
    assert mean_colour(frame_at(path, 9.0)).mean() < 30


def bad_files(tmp_path) -> dict[str, tuple]:
    good = three_scenes(tmp_path / "good.mp4").read_bytes()
    webm = (
        make_video(tmp_path / "good.webm", [(scene(2), 8.0)]).read_bytes()
        if has_encoder("libvpx-vp9")
        else None
    )
    files = {
        "zero.mp4": (b"", "empty file"),
        "truncated.mp4": (good[: len(good) // 2], "truncated"),
        "text.mp4": (b"not a video at all\n" * 20, "not a video"),
        "audio.m4v": (None, "audio only"),
    }
    if webm is not None:
        files["cut.webm"] = (webm[: int(len(webm) * 0.6)], "truncated")
    if has_encoder("mpeg4"):
        mkv = make_video(tmp_path / "good.mkv", [(scene(2), 2.0)]).read_bytes()
        files["codec.mkv"] = (mkv.replace(b"V_MPEG4/ISO/ASP", b"V_QQQQQ/ISO/ASP"), "unsupported video codec")
    return files


def test_bad_files_each_give_one_reason(tmp_path):
    from PIL import Image

    for name, (data, needle) in bad_files(tmp_path).items():
        path = tmp_path / name
        if data is None:
            audio_only(path)
        else:
            path.write_bytes(data)
        with pytest.raises(VideoError, match=needle):
            with VideoReader(path) as reader:
                list(reader.frames())
    Image.new("RGB", (16, 16), "red").save(tmp_path / "png.mov", format="PNG")  # named, not made, a video
    with pytest.raises(VideoError, match="not a video: the content is PNG"):
        VideoReader(tmp_path / "png.mov")


def test_clock():
    assert (clock(0), clock(65.9), clock(3600 + 62)) == ("0:00", "1:05", "1:01:02")
