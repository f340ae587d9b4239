"""Text in pictures, read by the real RapidOCR models, and word search over it (index --ocr)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.textpics import require_cjk_font, text_picture

from clipdex import Filter, Library

PICTURES = {
    "invoice.png": ["INVOICE 4471", "TOTAL 88"],
    "station.png": ["欢迎来到北京西站"],
    "menu.png": ["北京烤鸭", "Peking duck"],
    "blank.png": [],
    "receipt_tokyo.png": [],  # found by its file name only
}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_cjk_font()
    folder = tmp_path_factory.mktemp("ocr") / "pics"
    for n, (name, lines) in enumerate(PICTURES.items()):
        text_picture(folder / name, lines, seed=n)
    return folder


@pytest.fixture(scope="module")
def library(pictures: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    lib = Library.open(tmp_path_factory.mktemp("ocr-lib") / "lib", model=str(tiny_model_dir), create=True)
    stats = lib.index(pictures, ocr=True)
    assert (stats.added, stats.ocr_read, stats.ocr_failed) == (5, 5, 0)
    yield lib
    lib.close()


def names(results) -> set[str]:
    return {Path(r.path).name for r in results}


def by_name(lib: Library, name: str) -> int:
    return next(r.id for r in lib.search("x", k=50) if Path(r.path).name == name)


def test_lines_are_stored_in_reading_order_with_boxes(library):
    lines = library.text_lines(by_name(library, "invoice.png"))
    assert [line.text.replace(" ", "") for line in lines] == ["INVOICE4471", "TOTAL88"]
    for line in lines:
        assert len(line.box) == 4 and all(0 <= v <= 1 for p in line.box for v in p)
        assert line.confidence > 0.8
    top, bottom = (min(y for _, y in line.box) for line in lines)
    assert top < bottom
    assert library.text_lines(by_name(library, "blank.png")) == []  # no text: nothing stored
    assert library.store.texts.counts() == {"read": 5, "with_text": 3, "failed": 0, "lines": 5}


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("4471", {"invoice.png"}),
        ("invoice", {"invoice.png"}),
        ("INVOICE4471", {"invoice.png"}),  # the space OCR dropped or not: same tokens
        ("北京", {"station.png", "menu.png"}),  # a Chinese word inside a longer line
        ("西站", {"station.png"}),
        ("烤鸭", {"menu.png"}),
        ("京烤", {"menu.png"}),
        ("站北", set()),  # the characters, but not together
        ("北京 duck", {"menu.png"}),  # every word must match
        ("北京 OR total", {"station.png", "menu.png", "invoice.png"}),
        ("tokyo", {"receipt_tokyo.png"}),  # the file name
        ("ocr:tokyo", set()),
        ("inv*", {"invoice.png"}),
    ],
)
def test_words_are_an_exact_filter(library, words, expected):
    assert names(library.search("anything", k=10, words=words, by="meaning")) == expected


def test_several_words_options_must_all_match(library):
    assert names(library.search("x", words=["北京", "duck"])) == {"menu.png"}
    assert names(library.search("x", words=["北京", "4471"])) == set()


def test_words_compose_with_other_filters(library, pictures):
    under_other = Filter(under=[pictures.parent / "elsewhere"])
    assert library.search("x", words="北京", filter=under_other) == []
    assert names(library.search("x", words="北京", filter=Filter(under=[pictures]))) == {
        "station.png",
        "menu.png",
    }
    all_scores = [r.score for r in library.search("x", words="北京")]
    high = Filter(min_score=max(all_scores))
    assert len(library.search("x", words="北京", filter=high)) == 1


def test_both_puts_word_matches_first_and_keeps_true_cosines(library):
    meaning = {r.id: r.score for r in library.search("invoice", k=10, by="meaning")}
    both = library.search("invoice", k=10)  # a library that reads text: both by default
    assert Path(both[0].path).name == "invoice.png"
    assert len(both) == 5 and {r.id for r in both} == set(meaning)
    for r in both:
        assert r.score == pytest.approx(meaning[r.id], abs=1e-6)
    meaning = {r.id: r.score for r in library.search("invoice duck", k=10, by="meaning")}
    words = library.search("invoice duck", k=10, by="words")
    assert names(words) == {"invoice.png", "menu.png"}
    for r in words:  # an item found by its words has its own cosine as its score
        assert r.score == pytest.approx(meaning[r.id], abs=1e-6)


def test_results_carry_the_text_read(library):
    hits = {Path(r.path).name: r for r in library.search("x", k=10)}
    assert hits["station.png"].ocr == "欢迎来到北京西站"
    assert hits["station.png"].to_dict()["ocr"] == "欢迎来到北京西站"
    assert hits["blank.png"].ocr is None and "ocr" not in hits["blank.png"].to_dict()


@pytest.mark.parametrize("bad", ["", "!!!", "(北京", "a AND"])
def test_a_bad_word_query_is_one_clear_error(library, bad):
    from clipdex.errors import ClipdexError

    with pytest.raises(ClipdexError, match="word"):
        library.search("x", words=bad)


def word_ids(lib: Library, words: str) -> set[int]:
    return {r.id for r in lib.search("x", k=50, words=words, by="meaning")}


def test_words_follow_changes_moves_and_deletes(pictures, tiny_model_dir, tmp_path):
    folder = tmp_path / "pics"
    shutil.copytree(pictures, folder)
    with Library.open(tmp_path / "lib", model=str(tiny_model_dir), create=True) as lib:
        lib.index(folder, ocr=True)
        station = word_ids(lib, "西站")
        (folder / "sub").mkdir()
        (folder / "station.png").rename(folder / "sub" / "moved_station.png")  # a move keeps id and text
        text_picture(folder / "invoice.png", ["ORDER 5512"], seed=9)  # changed content: read again
        (folder / "menu.png").unlink()
        stats = lib.index(folder)  # remembered: still reads text
        assert (stats.moved, stats.updated, stats.removed, stats.ocr_read) == (1, 1, 1, 1)
        assert word_ids(lib, "西站") == station == word_ids(lib, "moved_station")
        assert word_ids(lib, "4471") == set() and len(word_ids(lib, "5512")) == 1
        assert word_ids(lib, "烤鸭") == set()
        assert lib.store.words.stale() == 0
        (folder / "blank.png").with_suffix(".txt").write_text("a caption about 上海\n")
        lib.index(folder)
        assert names(lib.search("x", words="上海")) == {"blank.png"}


def test_first_ocr_run_reads_pictures_indexed_before_and_no_ocr_stops(pictures, tiny_model_dir, tmp_path):
    folder = tmp_path / "pics"
    shutil.copytree(pictures, folder)
    with Library.open(tmp_path / "lib", model=str(tiny_model_dir), create=True) as lib:
        first = lib.index(folder)
        assert first.ocr_read is None and not lib.reads_text
        assert lib.search("x", words="北京") == []
        stats = lib.index(folder, ocr=True)  # nothing to re-embed, every picture to read
        assert (stats.unchanged, stats.ocr_read) == (5, 5) and lib.reads_text
        assert names(lib.search("x", words="北京")) == {"station.png", "menu.png"}
        text_picture(folder / "new.png", ["北京南站"], seed=7)
        off = lib.index(folder, ocr=False)
        assert (off.added, off.ocr_read) == (1, None) and not lib.reads_text
        assert names(lib.search("x", words="北京")) == {"station.png", "menu.png"}  # kept text stays


def test_a_picture_whose_text_cannot_be_read_stays_indexed(pictures, tiny_model_dir, tmp_path, monkeypatch):
    from clipdex.retrieval import ocr

    real = ocr.TextReader.read

    def read(self, picture):
        if np.asarray(picture).mean() < 0:  # never: fail on the first call instead
            return []
        if not getattr(self, "failed_once", False):
            self.failed_once = True
            raise RuntimeError("model blew up")
        return real(self, picture)

    monkeypatch.setattr(ocr.TextReader, "read", read)
    problems = []
    with Library.open(tmp_path / "lib", model=str(tiny_model_dir), create=True) as lib:
        stats = lib.index(pictures, ocr=True, problem=lambda path, reason: problems.append(reason))
        assert (stats.added, stats.ocr_read, stats.ocr_failed) == (5, 5, 1)
        assert problems == ["could not read its text: model blew up"]
        assert lib.store.texts.counts()["failed"] == 1
        again = lib.index(pictures)
        assert again.ocr_read == 0  # a remembered failure is not retried until the file changes


def test_check_finds_and_repairs_a_word_index_out_of_step(pictures, tiny_model_dir, tmp_path):
    with Library.open(tmp_path / "lib", model=str(tiny_model_dir), create=True) as lib:
        lib.index(pictures, ocr=True)
        info = lib.info()
        assert info["ocr"] == {"on": True, "read": 5, "with_text": 3, "failed": 0, "lines": 5}
        with lib.store.transaction():  # damage: a document lost behind the store's back
            lib.store.conn.execute("DELETE FROM words WHERE rowid = (SELECT min(rowid) FROM words)")
            lib.store.conn.execute("DELETE FROM words_dirty")
        report = lib.check()
        assert not report["healthy"] and [p["kind"] for p in report["problems"]] == ["words"]
        fixed = lib.check(repair=True)
        assert any("rebuilt the word index" in line for line in fixed["repaired"])
        assert lib.check()["healthy"]
        assert names(lib.search("x", words="北京")) == {"station.png", "menu.png"}


def test_watch_reads_the_text_of_new_pictures_in_a_library_that_reads_text(
    pictures, tiny_model_dir, tmp_path
):
    from helpers.watchhelp import wait_for, watching

    folder, lib_dir = tmp_path / "pics", tmp_path / "lib"
    folder.mkdir()
    with Library.open(lib_dir, model=str(tiny_model_dir), create=True) as lib:
        lib.index(folder, ocr=True)  # an empty folder, but the library now reads text
    with watching(lib_dir, [folder], f"local-dir:{tiny_model_dir}", debounce=0.3):
        shutil.copy(pictures / "station.png", folder / "arrived.png")

        def found() -> bool:
            with Library.open(lib_dir) as reader:
                return reader.count() == 1 and names(reader.search("x", words="西站")) == {"arrived.png"}

        wait_for(found, what="the text of the new picture")


def test_a_run_that_fails_mid_way_stops_the_reader_and_keeps_what_it_committed(
    pictures, tiny_model_dir, tmp_path, monkeypatch
):
    from clipdex.library import indexing

    real = indexing.IndexRun._store_images
    calls = []

    def store_then_fail(self, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # e.g. Ctrl-C after the first committed batch
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(indexing.IndexRun, "_store_images", store_then_fail)
    with Library.open(tmp_path / "lib", model=str(tiny_model_dir), create=True) as lib:
        with pytest.raises(KeyboardInterrupt):
            lib.index(pictures, ocr=True, batch_size=2)  # returns: no decode thread left blocked
        monkeypatch.setattr(indexing.IndexRun, "_store_images", real)
        first = lib.store.texts.counts()["read"]
        assert lib.count() == 2 and first <= 2  # the first batch (2 pictures) was committed
        stats = lib.index(pictures)  # resumes: the rest embedded, every picture read once
        assert lib.count() == 5 and stats.ocr_read == 5 - first
        assert lib.store.texts.counts()["read"] == 5
        assert names(lib.search("x", words="北京")) == {"station.png", "menu.png"}


def test_similar_gives_the_text_read_for_the_item_itself_too(library):
    station = by_name(library, "station.png")
    hits = library.similar(station, k=5)
    assert hits[0].id == station and hits[0].ocr == "欢迎来到北京西站"
    assert {Path(h.path).name: h.ocr for h in hits}["invoice.png"].replace(" ", "") == "INVOICE4471\nTOTAL88"
