"""`Library.add_texts`: free texts (labels, product titles) stored and indexed, searchable as texts."""

from __future__ import annotations

from collections.abc import Sequence

from clipdex.kinds import TEXT
from clipdex.library.parts import Parts


def add_texts(parts: Parts, texts: Sequence[str], source: str, batch_size: int) -> list[int]:
    """See `Library.add_texts`."""
    texts = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
    with parts.writing():
        if texts and parts.store.dim is not None:
            known = parts.store.merge.known_texts(texts)
            texts = [t for t in texts if t not in known]
        if not texts:
            return []
        enc = parts.models.adding()  # a model change is refused here: no re-embedding
        parts.indexes.get(TEXT)
        ids: list[int] = []
        for start, vecs in enc.iter_encode_texts(texts, batch_size):
            new = parts.store.items.insert_many(TEXT, source, vecs, texts=texts[start : start + len(vecs)])
            parts.indexes.apply(TEXT, (new.tolist(), vecs), [])
            parts.indexes.maybe_save()
            ids += new.tolist()
        parts.indexes.finish()
    return ids
