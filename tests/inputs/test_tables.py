"""clipdex.inputs.tables: the readers round-trip any text the standard writers write (hypothesis)."""

from __future__ import annotations

import csv
import json

from helpers.strategies import ONE_LINE, SETTINGS, TEXTS
from hypothesis import given
from hypothesis import strategies as st

from clipdex.inputs.tables import read_jsonl, read_lines, read_texts


@SETTINGS
@given(texts=TEXTS, tsv=st.booleans())
def test_csv_and_tsv_round_trip(tmp_path_factory, texts, tsv):
    path = tmp_path_factory.mktemp("csv") / ("t.tsv" if tsv else "t.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t" if tsv else ",")
        w.writerow(["id", "text"])
        w.writerows([[n, t] for n, t in enumerate(texts)])
    assert read_texts(path) == texts


@SETTINGS
@given(texts=TEXTS)
def test_jsonl_round_trips(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("jsonl") / "t.jsonl"
    for ascii_only in (True, False):
        path.write_text(
            "".join(json.dumps({"text": t}, ensure_ascii=ascii_only) + "\n" for t in texts), "utf-8"
        )
        assert read_texts(path) == texts
        assert [r["text"] for r in read_jsonl(path)] == texts


@SETTINGS
@given(texts=st.lists(ONE_LINE, min_size=1, max_size=8), crlf=st.booleans())
def test_txt_round_trips(tmp_path_factory, texts, crlf):
    path = tmp_path_factory.mktemp("txt") / "t.txt"
    with open(path, "w", encoding="utf-8", newline="\r\n" if crlf else "\n") as f:
        f.write("\n".join(texts) + "\n")
    assert read_texts(path) == texts
    assert read_lines(path) == texts
