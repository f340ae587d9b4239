"""Typed records that the Library hands out (their fields are those of the JSON contracts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One search hit; ``to_dict()`` is the JSON line of DESIGN.md."""

    rank: int
    score: float
    modality: str  # "image" | "text"
    id: int
    path: str | None  # absolute image path (escaped if not UTF-8); a text's linked image, or None
    text: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.modality == "image":
            d.pop("text")
        return d


@dataclass(slots=True)
class IndexStats:
    """Counts of one `index` run; ``to_dict()`` is the `index --json` object."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    texts_added: int = 0
    texts_updated: int = 0
    texts_removed: int = 0
    moved: int = 0
    skipped_failed: int = 0  # remembered failures, not retried (the file has not changed)
    reembedded: int = field(default=0)
    dropped: int | None = None  # set when the run re-embedded: images dropped (--drop-unembeddable)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("reembedded")
        if self.dropped is None:
            d.pop("dropped")
        return d


@dataclass(slots=True)
class ImportCounts:
    """Counts of one `import-embeddings` run; ``to_dict()`` is its ``--json`` object."""

    imported: int = 0  # new items
    updated: int = 0  # known key (path or text), another vector: updated in place
    unchanged: int = 0  # known key, same vector (and rows repeating a key within the input)
    missing_files: int = 0  # image paths that do not exist on this machine

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Reembedded:
    """What a re-embedding did: ``total`` items encoded, ``dropped`` images deleted (no file)."""

    total: int
    dropped: int
