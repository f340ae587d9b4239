"""clipdex.cli.library_cmds: `search` hands any query string to the library unchanged (hypothesis)."""

from __future__ import annotations

from helpers.strategies import TEXT
from hypothesis import given, settings


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
