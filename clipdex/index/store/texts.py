"""Text found in pictures: ``text_lines`` (one row per line, reading order, box, confidence) and
``text_reads`` (which items a source such as ``ocr`` has read, found text or not, or failed on).

Writes join the caller's transaction; replacing an item's lines and marking it read happen
together, so an interrupted run leaves each picture either read or not, never half read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipdex.index.store.batches import chunks
from clipdex.results import TextLine

if TYPE_CHECKING:
    from clipdex.index.store.database import Store

OCR = "ocr"


@dataclass(frozen=True, slots=True)
class TextRead:
    """What reading one item gave: its lines (maybe none), or the error that stopped it."""

    item_id: int
    lines: tuple[TextLine, ...] = ()
    error: str | None = None


class TextLinesTable:
    def __init__(self, store: Store):
        self._store = store

    @property
    def available(self) -> bool:
        """Whether this library's schema has the tables (a reader of an older one may not)."""
        return self._store.has_table("text_lines")

    def write(self, reads: Iterable[TextRead], source: str = OCR) -> None:
        """Replace each item's lines from ``source`` and mark it read (skipping items gone since)."""
        conn = self._store.conn
        now = time.time()
        with self._store.transaction():
            for r in reads:
                if conn.execute("SELECT 1 FROM items WHERE id = ?", (r.item_id,)).fetchone() is None:
                    continue  # deleted while it was being read
                conn.execute("DELETE FROM text_lines WHERE item_id = ? AND source = ?", (r.item_id, source))
                rows = [(r.item_id, source, n, line.text, json.dumps([list(p) for p in line.box]),
                         line.confidence) for n, line in enumerate(r.lines)]  # fmt: skip
                conn.executemany(
                    "INSERT INTO text_lines (item_id, source, ord, text, box, confidence)"
                    " VALUES (?, ?, ?, ?, ?, ?)", rows,
                )  # fmt: skip
                conn.execute(
                    "INSERT OR REPLACE INTO text_reads (item_id, source, error, read_at) VALUES (?, ?, ?, ?)",
                    (r.item_id, source, r.error, now),
                )

    def forget(self, ids: Sequence[int], source: str = OCR) -> None:
        """Drop the lines and read marks of ``ids`` (their content changed); caller's transaction."""
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for table in ("text_lines", "text_reads"):
                self._store.conn.execute(
                    f"DELETE FROM {table} WHERE source = ? AND item_id IN ({marks})", [source, *chunk]
                )

    def unread_images(self, source: str = OCR) -> list[tuple[int, bytes]]:
        """(id, path) of scanned images ``source`` has not read yet, by id."""
        rows = self._store.conn.execute(
            "SELECT id, path FROM items WHERE kind = 'image' AND path IS NOT NULL AND id NOT IN"
            " (SELECT item_id FROM text_reads WHERE source = ?) ORDER BY id",
            (source,),
        )
        return [(i, bytes(p)) for i, p in rows]

    def lines(self, ids: Sequence[int], source: str = OCR) -> dict[int, list[TextLine]]:
        """The lines of each of ``ids`` that has any, in reading order."""
        if not self.available:
            return {}
        out: dict[int, list[TextLine]] = {}
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for item_id, text, box, conf in self._store.conn.execute(
                "SELECT item_id, text, box, confidence FROM text_lines"
                f" WHERE source = ? AND item_id IN ({marks}) ORDER BY item_id, ord",
                [source, *chunk],
            ):
                corners = tuple(tuple(p) for p in json.loads(box)) if box else ()
                out.setdefault(item_id, []).append(TextLine(text, corners, conf or 0.0))
        return out

    def text(self, ids: Sequence[int], source: str = OCR) -> dict[int, str]:
        """The text of each of ``ids`` that has any: its lines joined by newlines."""
        return {i: "\n".join(line.text for line in lines) for i, lines in self.lines(ids, source).items()}

    def pairs(self, source: str = OCR) -> list[tuple[bytes, str]]:
        """(image path, its text read as one line) for every picture with text, by id."""
        if not self.available:
            return []
        rows = self._store.conn.execute(
            "SELECT i.path, group_concat(l.text, ' ') FROM (SELECT * FROM text_lines WHERE source = ?"
            " ORDER BY item_id, ord) l JOIN items i ON i.id = l.item_id WHERE i.path IS NOT NULL"
            " GROUP BY l.item_id ORDER BY l.item_id",
            (source,),
        )
        return [(bytes(p), t) for p, t in rows if t and t.strip()]

    def counts(self, source: str = OCR) -> dict[str, int]:
        """For ``info``: pictures read, with text, failed; lines stored."""
        if not self.available:
            return {"read": 0, "with_text": 0, "failed": 0, "lines": 0}
        conn = self._store.conn
        read, failed = conn.execute(
            "SELECT count(*), count(error) FROM text_reads WHERE source = ?", (source,)
        ).fetchone()
        lines, with_text = conn.execute(
            "SELECT count(*), count(DISTINCT item_id) FROM text_lines WHERE source = ?", (source,)
        ).fetchone()
        return {"read": read, "with_text": with_text, "failed": failed, "lines": lines}
