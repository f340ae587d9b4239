"""The SQL of a search filter: ``FROM … WHERE …`` selecting the items a `Filter` keeps.

Folder prefixes are byte ranges, so SQLite walks its (kind, path) index; dates use the
(kind, taken_at) one. `ItemsTable.where` builds one; its other filter methods run it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipdex.errors import ClipdexError
from clipdex.kinds import IMAGE

if TYPE_CHECKING:
    from clipdex.index.filters import Filter

UPGRADE = "this library's schema has no photo dates yet; run `clipdex check --repair` to upgrade"
WORDS_UPGRADE = "this library's schema has no word index yet; run `clipdex check --repair` to upgrade"


@dataclass(frozen=True)
class Where:
    """``FROM items x … WHERE …`` (the kept items are alias ``x``) and its arguments."""

    sql: str
    args: tuple
    words: tuple[str, ...] = ()  # the FTS5 queries of its word conditions (also inside ``sql``)
    base: Where | None = None  # the same without the word conditions (``kept_among`` checks those apart)


def where(kind: str, filt: Filter, has_dates: bool, has_words: bool = True) -> Where:
    """The `Where` selecting the items of ``kind`` that ``filt`` keeps; ``has_dates``/``has_words``:
    whether the schema has ``items.taken_at`` and the ``words`` table (a condition on an older one
    says how to upgrade)."""
    if (filt.after is not None or filt.before is not None) and not has_dates:
        raise ClipdexError(UPGRADE)
    if filt.words and not has_words:
        raise ClipdexError(WORDS_UPGRADE)
    # With words, SQLite must start from the few word matches (rowid lookups), not walk the whole
    # kind's index testing each item against them: `+` keeps it off the (kind, …) indexes.
    kind_is = "+x.kind" if filt.words else "x.kind"
    if kind == IMAGE:
        sql, img = f"FROM items x WHERE {kind_is} = 'image'", "x"
    else:
        sql, img = f"FROM items x LEFT JOIN items i ON x.image_id = i.id WHERE {kind_is} = 'text'", "i"
        if filt.captioned is not None:
            raise ValueError("captioned/uncaptioned applies to image searches")
    args: list = []
    if filt.under:
        # Per root, a byte range [root, root + "0") that SQLite can walk on its (kind, path) index
        # ("0" follows the separator "/"), then the exact test (the range also holds "root-x").
        # (With several roots SQLite scans the kind's index entries instead: still no vectors read.)
        ors = []
        for root in filt.under:
            prefix = root if root.endswith(os.sep.encode()) else root + os.sep.encode()
            end = prefix[:-1] + bytes([prefix[-1] + 1])
            ors.append(
                f"({img}.path >= ? AND {img}.path < ? AND ({img}.path = ? OR substr({img}.path, 1, ?) = ?))"
            )
            args += [root.rstrip(os.sep.encode()) or prefix, end, root, len(prefix), prefix]
        sql += " AND (" + " OR ".join(ors) + ")"
    if filt.after is not None:
        sql += f" AND {img}.taken_at >= ?"
        args.append(filt.after)
    if filt.before is not None:
        sql += f" AND {img}.taken_at < ?"
        args.append(filt.before)
    if filt.captioned is not None:
        exists = "EXISTS (SELECT 1 FROM items c WHERE c.image_id = x.id)"
        sql += " AND " + (exists if filt.captioned else "NOT " + exists)
    if filt.media != "all" and kind == IMAGE:  # a video's moments are image items of source 'video'
        sql += " AND x.source = 'video'" if filt.media == "videos" else " AND x.source != 'video'"
    if not filt.words:
        return Where(sql, tuple(args))
    base = Where(sql, tuple(args))
    queries = filt.word_queries
    for query in queries:  # each its own MATCH: all must hold
        sql += " AND x.id IN (SELECT rowid FROM words WHERE words MATCH ?)"
        args.append(query)
    return Where(sql, tuple(args), queries, base)
