"""Input files: non-regular files refused before opening; the readers round-trip any text (hypothesis)."""

from __future__ import annotations

import csv
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipdex.textfiles import read_jsonl, read_lines, read_texts

# ---- readers: any text the standard writers write comes back (hypothesis) ----------------------
# Texts as add-texts stores them: stripped, non-empty; any characters but NUL and surrogates,
# including U+2028, U+2029, \x85, \x0c and \r inside (str.splitlines would split on those).
TRICKY = st.sampled_from(["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\r", '"', ",", "\t"])
CHARS = st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), TRICKY)
TEXT = st.text(CHARS, min_size=1, max_size=30).map(str.strip).filter(bool)
ONE_LINE = TEXT.filter(lambda t: "\n" not in t and "\r" not in t)
TEXTS = st.lists(TEXT, min_size=1, max_size=8)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


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
