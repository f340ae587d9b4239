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
    reembedded: int = field(default=0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("reembedded")
        return d


@dataclass(frozen=True, slots=True)
class DuplicateItem:
    """One image of a near-duplicate group; ``score`` is its cosine to the group's first image."""

    id: int
    path: str | None
    score: float
    width: int | None
    height: int | None
    size: int | None  # file size in bytes

    def to_dict(self) -> dict:
        return asdict(self)
