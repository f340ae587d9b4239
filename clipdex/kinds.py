"""The two kinds of stored item, and the one parser of a search target."""

from __future__ import annotations

IMAGE = "image"
TEXT = "text"
TARGETS = ("images", "texts")  # what a search's ``target`` is spelled as (the API, the CLI)


def kind_of(target: str) -> str:
    """The stored kind ("image"/"text") a search ``target`` ("images"/"texts") names."""
    kind = {"images": IMAGE, "texts": TEXT, "image": IMAGE, "text": TEXT}.get(target)  # singular: internal
    if kind is None:
        raise ValueError(f"target must be 'images' or 'texts', not {target!r}")
    return kind
