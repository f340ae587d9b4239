"""Input files: non-regular files refused before opening; the readers round-trip any text (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

# ---- readers: any text the standard writers write comes back (hypothesis) ----------------------
# Texts as add-texts stores them: stripped, non-empty; any characters but NUL and surrogates,
# including U+2028, U+2029, \x85, \x0c and \r inside (str.splitlines would split on those).
TRICKY = st.sampled_from(["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\r", '"', ",", "\t"])
CHARS = st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), TRICKY)
TEXT = st.text(CHARS, min_size=1, max_size=30).map(str.strip).filter(bool)


@settings(max_examples=25, deadline=None)
@given(query=TEXT)
def test_query_strings_reach_the_encoder_unchanged(query):
    """A text query (any characters) is passed on verbatim: CLI words joined with spaces."""
    from click.testing import CliRunner

    from clipdex.cli import library_cmds
    from clipdex.cli.common import State

    seen = []

    class Lib:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return None

        def search(self, text=None, **kw):
            seen.append(text)
            return []

    class FakeState(State):
        def open(self, create=False, **kw):
            return Lib()

    res = CliRunner().invoke(library_cmds.search, ["--", *query.split(" ")], obj=FakeState(None, False))
    assert res.exit_code == 0, res.output
    assert seen == [" ".join(query.split(" ")).strip()]
