"""Embeddings and rankings, end to end through `clipdex index` / `clipdex search`.

The reference is plain open_clip, loaded independently of clipdex, and a brute-force numpy ranking
of the vectors clipdex stored.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.corehelp import blocks_image, brute_force, json_lines, make_images, ok, path_ids, stored
from PIL import Image

from clipdex.index.faiss.vector_index import VectorIndex
from clipdex.index.store.database import Store
from clipdex.kinds import IMAGE, TEXT

RGB_NAMES = [f"rgb{i:02d}.png" for i in range(8)]
CAPTIONS = {"rgb00": "a red square", "rgb01": "two blue circles", "small": "a small photo"}
ADDED = ["a dog on a beach", "a city at night", "ünïcödé text ✓", "a red square"]


@pytest.fixture(scope="module")
def indexed(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One library: RGB/grey/palette PNGs, a small JPEG, two identical files, captions, free texts."""
    root = tmp_path_factory.mktemp("emb")
    imgs = root / "imgs"
    files = make_images(imgs, RGB_NAMES + ["small.jpg"], seed=1)
    for name, mode in (("gray.png", "L"), ("pal.png", "P")):
        blocks_image(99 + len(name), mode=mode).save(imgs / name)
        files[name] = imgs / name
    shutil.copy(files["rgb03.png"], imgs / "dup_a.png")
    shutil.copy(files["rgb03.png"], imgs / "dup_b.png")
    files["dup_a.png"], files["dup_b.png"] = imgs / "dup_a.png", imgs / "dup_b.png"
    for stem, text in CAPTIONS.items():
        (imgs / f"{stem}.txt").write_text(text + "\n")
    lib = root / "lib"
    # The default runtime (auto): on a CPU, ONNX Runtime through graphs the first write exports.
    auto = {"CLIPDEX_RUNTIME": "auto"}
    res = ok("--library", lib, "index", imgs, "--model", tiny_model_dir, "--json", "--batch-size", "4",
             env=auto)  # fmt: skip
    assert len(list((lib / "models").glob("onnx-*/image.onnx"))) == 1 and "exporting model" in res.stderr
    assert json_lines(res.stdout) == [
        {"added": len(files), "updated": 0, "removed": 0, "unchanged": 0, "failed": 0,
         "texts_added": len(CAPTIONS), "texts_updated": 0, "texts_removed": 0, "moved": 0,
         "skipped_failed": 0}
    ]  # fmt: skip
    (root / "texts.txt").write_text("\n".join(ADDED) + "\n\n")
    assert json_lines(ok("--library", lib, "add-texts", root / "texts.txt", "--json", env=auto).stdout) == [
        {"added": len(ADDED), "unchanged": 0}
    ]
    return {"lib": lib, "imgs": imgs, "files": files}


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path):
    """Plain open_clip: model, preprocess and tokenizer, nothing from clipdex."""
    import open_clip

    spec = "local-dir:" + str(tiny_model_dir)
    model, _, preprocess = open_clip.create_model_and_transforms(spec)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(spec)


def _ref_images(reference, paths: list[Path]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    model, preprocess, _ = reference
    pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        return F.normalize(model.encode_image(pixels), dim=-1).numpy()


def _ref_texts(reference, texts: list[str]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    model, _, tokenizer = reference
    with torch.no_grad():
        return F.normalize(model.encode_text(tokenizer(texts)), dim=-1).numpy()


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path):
    """clipdex's own loaded model (for the engine's query vectors)."""
    from clipdex.retrieval.models import load_model, resolve_spec

    return load_model(resolve_spec(str(tiny_model_dir)), "cpu")


def test_stored_image_vectors_equal_open_clip(indexed, reference):
    names = sorted(indexed["files"])
    paths = [indexed["files"][n] for n in names]
    ids = path_ids(indexed["lib"])
    store = Store(indexed["lib"])
    want = [ids[bytes(p)] for p in paths]
    got = store.vectors.get(want)
    # A search reads its candidates' rows with their vectors: the same vectors, the same records
    # as `items`, and ids without a row (here -5) get zeros and no record.
    rows: dict = {}
    with_rows = store.vectors.get([*want, -5], items=rows)
    assert rows == store.items.get(want) and np.array_equal(with_rows[:-1], got) and not with_rows[-1].any()
    store.close()
    ref = _ref_images(reference, paths)
    assert got.shape == ref.shape == (len(names), 64)
    assert np.abs(got - ref).max() <= 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


def test_text_vectors_equal_open_clip(indexed, reference, lm):
    from clipdex.retrieval.embed import encode_texts

    texts = ["a red square", "ünïcödé text ✓", "", "word " * 100]  # empty and over-long too
    got = encode_texts(lm, texts)
    assert np.abs(got - _ref_texts(reference, texts)).max() <= 1e-5
    # What `index` stored for sidecar captions and `add-texts` stored for free texts.
    store = Store(indexed["lib"])
    items = list(store.items.iter(TEXT))
    vecs = store.vectors.get([i for i, _, _ in items])
    store.close()
    texts = [t for _, _, t in items]
    assert sorted(texts) == sorted(list(CAPTIONS.values()) + ADDED)
    assert np.abs(vecs - _ref_texts(reference, texts)).max() <= 1e-5


@pytest.mark.parametrize("name", ["rgb00.png", "rgb05.png", "small.jpg", "gray.png", "pal.png"])
def test_image_query_finds_itself_first(indexed, name):
    path = indexed["files"][name]
    hits = json_lines(ok("--library", indexed["lib"], "search", "--image", path, "-k", "3", "--json").stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"] == str(path) and hits[0]["score"] >= 0.9999
    assert hits[1]["score"] < 0.9999


def test_identical_images_tie_by_ascending_id(indexed):
    hits = json_lines(
        ok("--library", indexed["lib"], "search", "--image", indexed["files"]["dup_b.png"], "-k", "3",
           "--json").stdout
    )  # fmt: skip
    top = {h["path"]: h for h in hits}
    dups = {str(indexed["files"][n]) for n in ("rgb03.png", "dup_a.png", "dup_b.png")}
    assert set(top) == dups and all(h["score"] >= 0.9999 for h in hits)
    assert [h["id"] for h in hits] == sorted(h["id"] for h in hits)


def test_identical_vectors_score_the_same_for_every_k(tiny_model_dir, tmp_path):
    """20 copies of one image, encoded in different batches: one score, ascending ids, whatever k."""
    src = make_images(tmp_path / "src", ["x.png", "other.png"], seed=11)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(src["other.png"], imgs / "aaa.png")
    for i in range(20):
        shutil.copy(src["x.png"], imgs / f"copy{i:02d}.png")
    lib = tmp_path / "lib"
    ok("--library", lib, "index", imgs, "--model", tiny_model_dir, "--batch-size", "3", "--quiet")
    copies = sorted(i for p, i in path_ids(lib).items() if b"copy" in p)
    seen = set()
    for k in (1, 2, 5, 13, 21):
        hits = json_lines(
            ok("--library", lib, "search", "--image", imgs / "copy07.png", "-k", k, "--json").stdout
        )
        n = min(k, 20)
        assert [h["id"] for h in hits[:n]] == copies[:n]
        seen |= {h["score"] for h in hits[:n]}
    assert len(seen) == 1 and abs(seen.pop() - 1) < 1e-6


@pytest.mark.parametrize(
    "query, k", [("a red square", 1), ("dog", 4), ("ünïcödé", 100), ("a photo of a cat on a sofa", 100)]
)
def test_text_to_image_ranking_equals_brute_force(indexed, lm, query, k):
    from clipdex.retrieval.embed import encode_texts

    q = encode_texts(lm, [query])[0]
    ids, vecs = stored(indexed["lib"], IMAGE)
    want = brute_force(ids, vecs, q, k)
    hits = json_lines(ok("--library", indexed["lib"], "search", query, "-k", k, "--json").stdout)
    assert [h["id"] for h in hits] == [i for i, _ in want]
    assert np.allclose([h["score"] for h in hits], [s for _, s in want], atol=1e-6)
    assert [h["rank"] for h in hits] == list(range(1, len(want) + 1))
    assert all(h["modality"] == "image" for h in hits)


@pytest.mark.parametrize("name", ["rgb00.png", "small.jpg"])
def test_image_to_text_ranking_equals_brute_force(indexed, reference, name):
    path = indexed["files"][name]
    q = _ref_images(reference, [path])[0]
    ids, vecs = stored(indexed["lib"], TEXT)
    want = brute_force(ids, vecs, q, 100)
    out = ok("--library", indexed["lib"], "search", "--image", path, "--target", "texts", "-k", 100, "--json")
    hits = json_lines(out.stdout)
    assert len(hits) == len(CAPTIONS) + len(ADDED)
    assert [h["id"] for h in hits] == [i for i, _ in want]
    assert np.allclose([h["score"] for h in hits], [s for _, s in want], atol=1e-5)
    assert all(h["modality"] == "text" for h in hits)


def test_text_to_text_finds_identical_text(indexed):
    hits = json_lines(
        ok("--library", indexed["lib"], "search", "a", "red", "square", "--target", "texts", "--json").stdout
    )
    # Stored twice (a sidecar caption and an add-texts entry): both score 1, ascending id.
    assert [h["text"] for h in hits[:2]] == ["a red square"] * 2
    assert hits[0]["score"] >= 0.9999 and hits[1]["score"] >= 0.9999 and hits[2]["score"] < 0.9999
    assert hits[0]["id"] < hits[1]["id"]
    assert hits[0]["path"] == str(indexed["files"]["rgb00.png"])  # caption: linked image
    assert hits[1]["path"] is None  # add-texts entry: no image


def _index_copy(src: Path, tiny: Path, root: Path) -> tuple[Path, Path]:
    imgs = root / "a"
    shutil.copytree(src, imgs)
    lib = root / "lib"
    ok("--library", lib, "index", imgs, "--model", tiny, "--quiet")
    return imgs, lib


@pytest.mark.parametrize("damage", ["missing", "stale", "garbage"])
def test_faiss_file_rebuilt_from_sqlite(indexed, tiny_model_dir, tmp_path, damage):
    imgs, lib = _index_copy(indexed["imgs"], tiny_model_dir, tmp_path)
    faiss_file = lib / "images.faiss"
    old = faiss_file.read_bytes()
    # More items after the FAISS file was saved: a stale file would not know them.
    more = make_images(tmp_path / "b", ["new1.png", "new2.png"], seed=7)
    ok("--library", lib, "index", tmp_path / "b", "--quiet")
    query = ["search", "--image", more["new1.png"], "-k", 100, "--json"]
    before = json_lines(ok("--library", lib, *query).stdout)
    if damage == "missing":
        faiss_file.unlink()
    elif damage == "stale":
        faiss_file.write_bytes(old)
    else:
        faiss_file.write_bytes(b"not a faiss index at all")
    left = faiss_file.read_bytes() if faiss_file.exists() else None
    res = ok("--library", lib, *query)
    after = json_lines(res.stdout)
    assert after == before
    assert after[0]["path"] == str(more["new1.png"])
    assert len(after) == len(indexed["files"]) + 2
    # A reader searches exactly from SQLite, says so once, and leaves the file alone…
    assert res.stderr.startswith("clipdex: warning: the image index") and res.stderr.count("\n") == 1
    assert (faiss_file.read_bytes() if faiss_file.exists() else None) == left
    # …the next writer rebuilds it.
    ok("--library", lib, "index", tmp_path / "b", "--quiet")
    assert json_lines(ok("--library", lib, *query).stdout) == before
    assert faiss_file.exists() and VectorIndex.load(faiss_file).ntotal == len(after)
    ids, vecs = stored(lib, IMAGE)
    want = brute_force(ids, vecs, vecs[list(ids).index(after[0]["id"])], 100)
    assert [h["id"] for h in after] == [i for i, _ in want]
