"""clipdex.inputs.spans and the t/t_end columns of import metadata (csv, jsonl, parquet)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipdex.errors import ClipdexError
from clipdex.inputs.embeddings import read_embeddings
from clipdex.inputs.spans import check_spans, group_frames, parse_arrow, parse_values


def nan_equal(a: np.ndarray, b: list) -> bool:
    return np.array_equal(a, np.array(b, np.float64), equal_nan=True)


def test_parse_values_reads_numbers_and_empties():
    got = parse_values(["1.5", "", None, " 2 ", 3, 4.25, "0"], "m.csv", "t")
    assert got.dtype == np.float64 and nan_equal(got, [1.5, math.nan, math.nan, 2, 3, 4.25, 0])
    assert np.isnan(parse_values(["", None, ""], "m.csv", "t")).all()


@pytest.mark.parametrize(
    ("value", "why"),
    [("x", "not a number"), ("nan", "not a finite"), ("-inf", "not a finite"), (True, "not a number"),
     ([1], "not a number"), (float("inf"), "not a finite")],
)  # fmt: skip
def test_parse_values_refuses_naming_file_row_and_column(value, why):
    with pytest.raises(ClipdexError) as e:
        parse_values(["1", "", value], "m.jsonl", "t_end")
    msg = str(e.value)
    assert msg.startswith("m.jsonl: row 2 has t_end = ") and why in msg and "\n" not in msg


def test_parse_arrow_tells_nulls_from_nan_and_takes_ints_and_strings():
    col = pa.chunked_array([pa.array([1.0, None], pa.float64()), pa.array([2.5], pa.float64())])
    assert nan_equal(parse_arrow(col, "m.parquet", "t"), [1.0, math.nan, 2.5])
    assert nan_equal(
        parse_arrow(pa.chunked_array([pa.array([3, None], pa.int32())]), "m", "t"), [3, math.nan]
    )
    assert nan_equal(
        parse_arrow(pa.chunked_array([pa.array(["1", None, ""])]), "m", "t"), [1, math.nan, math.nan]
    )
    assert np.isnan(parse_arrow(pa.chunked_array([pa.nulls(2)]), "m", "t")).all()
    with pytest.raises(ClipdexError, match=r"m.parquet: row 1 has t = nan, not a finite number"):
        parse_arrow(pa.chunked_array([pa.array([0.0, float("nan")])]), "m.parquet", "t")
    with pytest.raises(ClipdexError, match="holds bool values, not numbers"):
        parse_arrow(pa.chunked_array([pa.array([True])]), "m.parquet", "t")


def test_check_spans_fills_t_end_and_refuses_bad_spans():
    nan = math.nan
    t, e = check_spans(np.array([nan, 1.0, 2.0]), np.array([nan, nan, 5.0]), "m")
    assert nan_equal(t, [nan, 1, 2]) and nan_equal(e, [nan, 1, 5])
    assert check_spans(np.array([nan, nan]), None, "m") == (None, None)  # no frames: pictures only
    assert check_spans(None, None, "m") == (None, None)
    for t, e, msg in [
        ([0.0, -0.5], None, "row 1 has t = -0.5, below 0"),
        ([nan, 1.0], [2.0, nan], "row 0 has t_end = 2.0, but no t"),
        (None, [nan, 2.0], "row 1 has t_end = 2.0, but no t"),
        ([3.0, 1.0], [4.0, 0.5], "row 1 has t_end = 0.5, before its t = 1.0"),
    ]:
        with pytest.raises(ClipdexError, match=msg):
            check_spans(None if t is None else np.array(t), None if e is None else np.array(e), "m")


def test_group_frames_by_video_then_t_first_row_wins():
    nan = math.nan
    values = ["b", "a", "p", "b", "a", "b", "a"]
    t = np.array([5.0, 1.0, nan, 0.0, 0.0, 5.0, 1.0])
    rows, starts, repeated = group_frames(values, t)
    # b first (row 0 came first): its t=0 (row 3), t=5 (row 0; row 5 repeats it); then a.
    assert rows.tolist() == [3, 0, 4, 1] and starts.tolist() == [0, 2] and repeated == 2
    rows, starts, repeated = group_frames(["p"], np.array([nan]))
    assert len(rows) == 0 and len(starts) == 0 and repeated == 0


def test_read_embeddings_reads_spans_of_all_three_formats(tmp_path):
    vecs = np.arange(1, 13, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "v.npy", vecs)
    rows = [
        {"path": "v.mp4", "t": 0, "t_end": 2},
        {"path": "p.jpg"},
        {"path": "v.mp4", "t": 2},
        {"path": "q.jpg"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.csv").write_text("path,t_end,t\nv.mp4,2,0\np.jpg,,\nv.mp4,,2\nq.jpg\n")
    pq.write_table(
        pa.table({"path": [r["path"] for r in rows], "t": pa.array([0, None, 2, None], pa.float32())}),
        tmp_path / "m.parquet",
    )
    for name, t_end in (("m.jsonl", 2.0), ("m.csv", 2.0), ("m.parquet", 0.0)):
        data = read_embeddings(tmp_path / "v.npy", tmp_path / name)
        assert nan_equal(data.t, [0, math.nan, 2, math.nan]), name
        assert nan_equal(data.t_end, [t_end, math.nan, 2, math.nan]), name
        assert data.frame_rows().tolist() == [0, 2] and data.picture_rows(1, 4).tolist() == [0, 2]
        assert data.values[0] == str(tmp_path / "v.mp4")  # relative to the metadata's folder
        assert data.missing_files() == 3  # two pictures, and the video once
        whole = np.concatenate([c.copy() for _, c in data.chunks()])
        assert np.array_equal(data.rows(np.array([2, 0])), whole[[2, 0]])
    (tmp_path / "p.jpg").write_bytes(b"x")
    (tmp_path / "v.mp4").write_bytes(b"x")
    assert read_embeddings(tmp_path / "v.npy", tmp_path / "m.csv").missing_files() == 1


def test_pictures_only_and_texts_have_no_spans(tmp_path):
    np.save(tmp_path / "v.npy", np.ones((2, 3), np.float32))
    (tmp_path / "p.csv").write_text("path,t,t_end\na.jpg,,\nb.jpg,,\n")
    data = read_embeddings(tmp_path / "v.npy", tmp_path / "p.csv")
    assert data.t is None and data.t_end is None and data.picture_rows(0, 2) is None
    (tmp_path / "t.csv").write_text("text,t\na cat,-4\na dog,soon\n")
    data = read_embeddings(tmp_path / "v.npy", tmp_path / "t.csv")
    assert data.modality == "text" and data.t is None
