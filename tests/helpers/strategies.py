"""Hypothesis strategies for the text round-trip tests (text files, pairs, CLI queries)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

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
