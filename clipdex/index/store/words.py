"""Word search: the FTS5 table ``words`` (one document per item: file name, caption, text read in
the picture) and the translation of a user's words into FTS5 queries.

FTS5's unicode61 tokenizer splits on spaces and punctuation, which Chinese and Japanese don't
use: a whole line of 汉字 would be one token and 北京 would never match inside 欢迎来到北京西站.
So the documents and the queries both pass through `searchable`, which makes every CJK character
its own token (and splits letters from digits, as OCR often drops the space in "INVOICE 4471");
a CJK word in a query becomes a phrase of its characters, which matches exactly where those
characters stand together. The same function on both sides keeps them in step.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

from clipdex.errors import ClipdexError
from clipdex.index.store.batches import chunks

if TYPE_CHECKING:
    from clipdex.index.store.database import Store

# Han (with extensions and compatibility forms), kana, Hangul syllables, CJK punctuation-free marks.
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
_CJK_CHAR = re.compile(f"([{_CJK}])")
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
_QUERY_TOKEN = re.compile(r'"(?:[^"]|"")*"?|[()]|[^\s()"]+')
_OPERATORS = {"AND", "OR", "NOT"}
_COLUMNS = ("name", "caption", "ocr")
MAX_RANKING_TERMS = 32


def searchable(text: str) -> str:
    """``text`` in the form the ``words`` table indexes and queries: NFKC (full-width letters to
    ASCII), each CJK character standing alone, letters apart from digits."""
    if not text.isascii():  # (ASCII is its own NFKC form and holds no CJK: most file names)
        text = unicodedata.normalize("NFKC", text)
        text = _CJK_CHAR.sub(r" \1 ", text)
    return _LETTER_DIGIT.sub(" ", text) if text else text


def _phrase(text: str) -> str | None:
    words = [w for w in searchable(text).split() if re.search(r"\w", w)]  # punctuation is no word
    return '"' + " ".join(w.replace('"', '""') for w in words) + '"' if words else None


def match_query(words: str) -> str:
    """A user's ``--words`` (FTS5 query syntax: every word must match; "quoted phrases", OR, NOT,
    parentheses, a trailing * for a prefix, ``ocr:``/``caption:``/``name:`` for one field) as the
    FTS5 query over `searchable` documents. Raises ClipdexError when nothing is left to search."""
    out: list[str] = []
    for token in _QUERY_TOKEN.findall(words):
        if token in "()" or token in _OPERATORS or (token == "NEAR"):
            out.append(token)
            continue
        if token.startswith('"'):
            inner = token[1:-1] if len(token) > 1 and token.endswith('"') else token[1:]
            phrase = _phrase(inner.replace('""', '"'))
            if phrase:
                out.append(phrase)
            continue
        column, sep, rest = token.partition(":")
        if sep and column in _COLUMNS:
            token = rest
            out.append(f"{column} :")
        prefix = token.endswith("*")
        phrase = _phrase(token.rstrip("*"))
        if phrase:
            out.append(phrase + (" *" if prefix else ""))
        elif sep and column in _COLUMNS:
            out.pop()
    if not any(t.startswith('"') for t in out):
        raise ClipdexError(f"no words to search for in {words!r}")
    query = " ".join(out)
    _check_syntax(words, query)
    return query


def _check_syntax(words: str, query: str) -> None:
    """FTS5's own parser on an empty table: a malformed query fails before any search runs."""
    import sqlite3

    global _PROBE
    with _PROBE_LOCK:
        if _PROBE is None:
            _PROBE = sqlite3.connect(":memory:", check_same_thread=False)
            _PROBE.execute("CREATE VIRTUAL TABLE w USING fts5(name, caption, ocr)")
        try:
            _PROBE.execute("SELECT rowid FROM w WHERE w MATCH ?", (query,)).fetchall()
        except sqlite3.OperationalError as e:
            raise ClipdexError(f"not a valid word query: {words!r} ({e})") from None


_PROBE = None
_PROBE_LOCK = threading.Lock()


def ranking_query(text: str) -> str | None:
    """A free text (a search's TEXT) as an FTS5 query matching any of its words, for ranking by
    BM25; a run of CJK characters is one phrase. None when it has no words."""
    terms = dict.fromkeys(p for w in re.findall(r"\w+", unicodedata.normalize("NFKC", text))
                          if (p := _phrase(w)))  # fmt: skip
    return " OR ".join(list(terms)[:MAX_RANKING_TERMS]) or None


def _name(path: bytes | None) -> str:
    """The file name without its extension, as `os.path.splitext` cuts it (leading dots stay)."""
    if not path:
        return ""
    base = bytes(path).rpartition(b"/")[2]
    dot = base.rfind(b".")
    stem = base[:dot] if dot > 0 and base[:dot].strip(b".") else base
    return stem.decode("utf-8", "replace")


class WordsTable:
    """The ``words`` FTS5 table: kept in step with items and text lines, and queried."""

    def __init__(self, store: Store):
        self._store = store

    def mark(self, ids: Sequence[int]) -> None:
        """Items whose documents need rewriting at the next commit (new items and the images
        their captions link to: `ItemsTable` marks its inserts here; triggers mark the rest)."""
        self._store.conn.executemany(
            "INSERT OR IGNORE INTO words_dirty (id) VALUES (?)", ((int(i),) for i in ids)
        )

    def mark_range(self, first: int, last: int) -> None:
        """Items ``first`` to ``last`` (a bulk insert's consecutive ids), in one statement."""
        self._store.conn.execute(
            "INSERT OR IGNORE INTO words_dirty (id) SELECT id FROM items WHERE id BETWEEN ? AND ?",
            (first, last),
        )

    def flush(self) -> int:
        """Rewrite the documents of the items the triggers marked dirty; inside the caller's
        transaction (the store calls it before each commit). Returns how many were rewritten."""
        conn = self._store.conn
        ids = [r[0] for r in conn.execute("SELECT id FROM words_dirty")]
        for chunk in chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT id, kind, path, text FROM items WHERE id IN ({marks})", chunk)
            docs = {i: [_name(p) if kind == "image" else "", [] if kind == "image" else [t or ""], []]
                    for i, kind, p, t in rows}  # fmt: skip
            for image_id, text in conn.execute(
                f"SELECT image_id, text FROM items WHERE image_id IN ({marks}) ORDER BY id", chunk
            ):
                if image_id in docs and text:
                    docs[image_id][1].append(text)
            for item_id, text in conn.execute(
                f"SELECT item_id, text FROM text_lines WHERE item_id IN ({marks})"
                " ORDER BY item_id, source, ord",
                chunk,
            ):
                if item_id in docs:
                    docs[item_id][2].append(text)
            conn.execute(f"DELETE FROM words WHERE rowid IN ({marks})", chunk)
            conn.executemany(
                "INSERT INTO words (rowid, name, caption, ocr) VALUES (?, ?, ?, ?)",
                [(i, searchable(n), searchable("\n".join(c)), searchable("\n".join(o)))
                 for i, (n, c, o) in docs.items()],
            )  # fmt: skip
            conn.execute(f"DELETE FROM words_dirty WHERE id IN ({marks})", chunk)
        return len(ids)

    def rebuild(self) -> int:
        """Every item's document anew (`check --repair`); in the caller's transaction."""
        self._store.conn.execute("DELETE FROM words")
        self._store.conn.execute("INSERT OR IGNORE INTO words_dirty (id) SELECT id FROM items")
        return self.flush()

    def stale(self) -> int:
        """Items whose document is missing, or that no longer exist but still have one (`check`)."""
        conn = self._store.conn
        missing = conn.execute(
            "SELECT count(*) FROM items WHERE id NOT IN (SELECT rowid FROM words)"
            " AND id NOT IN (SELECT id FROM words_dirty)"
        ).fetchone()[0]
        extra = conn.execute(  # a dirty id is not stale: its document is rewritten at the next commit
            "SELECT count(*) FROM words WHERE rowid NOT IN (SELECT id FROM items)"
            " AND rowid NOT IN (SELECT id FROM words_dirty)"
        ).fetchone()[0]
        return missing + extra

    def count(self, query: str) -> int:
        """How many documents (items of any kind) match the FTS5 ``query``."""
        return self.run("SELECT count(*) FROM words WHERE words MATCH ?", (query,), query)[0][0]

    def among(self, query: str, ids: Sequence[int]) -> list[int]:
        """Those of ``ids`` whose documents match the FTS5 ``query`` (in their order)."""
        found: set[int] = set()
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT rowid FROM words WHERE words MATCH ? AND rowid IN ({marks})"
            found.update(r[0] for r in self.run(sql, (query, *chunk), query))
        return [i for i in ids if i in found]

    def ranked(self, query: str, limit: int | None = None) -> list[int]:
        """Ids whose documents match the FTS5 ``query``, best BM25 first."""
        sql = "SELECT rowid FROM words WHERE words MATCH ? ORDER BY rank"
        args: tuple = (query,)
        if limit is not None:
            sql, args = sql + " LIMIT ?", (query, limit)
        return [r[0] for r in self.run(sql, args, query)]

    def run(self, sql: str, args: Sequence, query: str) -> list:
        """Run SQL holding a MATCH: FTS5 syntax errors become one clear line."""
        import sqlite3

        try:
            return self._store.conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.OperationalError as e:
            if "fts5" in str(e) or "syntax" in str(e) or "no such column" in str(e):
                raise ClipdexError(f"not a valid word query: {query!r} ({e})") from None
            raise
