"""Reading PAIRS files and folders, skip counting, the deterministic image-disjoint split; any caption
round-trips (hypothesis)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from helpers.strategies import SETTINGS, TEXT
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from clipdex.errors import ClipdexError
from clipdex.retrieval.training.pairs import Pair, decode_pairs, read_pairs, split_pairs


def _img(path: Path, colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def test_csv_relative_paths_resolve_against_the_file_and_empty_captions_drop(tmp_path: Path) -> None:
    _img(tmp_path / "imgs" / "a.png")
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "pairs.csv"
    f.write_text('image,caption\n../imgs/a.png,"a red, square thing"\n../imgs/b.png,   \n', encoding="utf-8")
    pairs, empty = read_pairs(f)
    assert pairs == [Pair(str((tmp_path / "imgs" / "a.png").resolve()), "a red, square thing")]
    assert empty == 1


def test_tsv_and_jsonl(tmp_path: Path) -> None:
    a = _img(tmp_path / "a.png")
    (tmp_path / "p.tsv").write_text(f"caption\timage\tother\none\t{a}\tx\n", encoding="utf-8")
    assert read_pairs(tmp_path / "p.tsv") == ([Pair(str(a), "one")], 0)
    lines = [{"image": "a.png", "caption": "x"}, {"image": "a.png", "caption": ""}, {"image": "a.png"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    assert read_pairs(tmp_path / "p.jsonl") == ([Pair(str(a), "x")], 2)


@pytest.mark.parametrize(
    ("name", "text"),
    [("p.csv", "path,text\na.png,x\n"), ("p.jsonl", '{"path": "a.png", "text": "x"}\n')],
)
def test_wrong_columns_name_the_columns_found(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ClipdexError, match=r"'image' and 'caption'.*found 'path', 'text'"):
        read_pairs(tmp_path / name)


def test_folder_with_sidecars(tmp_path: Path) -> None:
    a = _img(tmp_path / "a.jpg")
    _img(tmp_path / "nested" / "b.png")
    _img(tmp_path / "no_caption.png")
    (tmp_path / "a.txt").write_text("  a red square \n", encoding="utf-8")
    (tmp_path / "nested" / "b.txt").write_text("\n", encoding="utf-8")
    pairs, empty = read_pairs(tmp_path)
    assert pairs == [Pair(str(a.resolve()), "a red square")]
    assert empty == 1


def test_missing_and_unreadable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    good = [Pair(str(_img(tmp_path / f"{i}.png")), f"c{i}") for i in range(10)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    bad = [Pair(str(tmp_path / "missing.png"), "m")]
    out = decode_pairs(good + bad)
    assert out.skipped == 1 and out.pairs == good and set(out.images) == {p.image for p in good}
    assert out.bad_images[0][0].endswith("missing.png")
    with pytest.raises(ClipdexError, match=r"2 of 11 pairs have a missing or unreadable image"):
        decode_pairs(good[:9] + bad + [Pair(str(tmp_path / "broken.png"), "b")])


def test_split_is_deterministic_image_disjoint_and_order_free(tmp_path: Path) -> None:
    # 40 images, each with 1-3 captions
    pairs = [Pair(f"/x/{i}.png", f"c{i}-{j}") for i in range(40) for j in range(1 + i % 3)]
    train, val, test = split_pairs(pairs, 0.25, seed=3)
    assert test == []
    assert {p.image for p in train}.isdisjoint({p.image for p in val})
    assert len({p.image for p in val}) == 10 and len(train) + len(val) == len(pairs)
    assert split_pairs(list(reversed(pairs)), 0.25, seed=3)[1] == list(reversed(val))
    assert split_pairs(pairs, 0.25, seed=4)[1] != val
    with pytest.raises(ClipdexError):
        split_pairs(pairs, 1.5)


@SETTINGS
@given(captions=st.lists(TEXT, min_size=1, max_size=5))
def test_pairs_round_trip(tmp_path_factory, captions):
    folder = tmp_path_factory.mktemp("pairs")
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["image", "caption"])
    w.writerows([[f"img{n}.png", c] for n, c in enumerate(captions)])
    (folder / "p.csv").write_text(buf.getvalue(), encoding="utf-8", newline="")
    pairs, empty = read_pairs(folder / "p.csv")
    assert empty == 0 and [p.caption for p in pairs] == captions
