"""The README's command one: the offline demo runs end to end (shortened here)."""

from __future__ import annotations

from clipdex import Library
from clipdex.demo.__main__ import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "demo"), "--scenes", "100", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "$ clipdex" in out and "Demo finished" in out
    assert out.count("$ clipdex eval") == 2 and "text->image R@1" in out
    assert (tmp_path / "demo" / "explain.png").is_file()
    with Library.open(tmp_path / "demo" / "library") as lib:
        captioned = len(list((tmp_path / "demo" / "scenes").glob("*.txt")))
        # pictures of held-out descriptions are indexed without a caption
        assert lib.store.items.count("image") == 100 and lib.store.items.count("text") == captioned < 100
        # --apply made the fine-tuned model the library's
        assert lib.spec.name == f"local-dir:{(tmp_path / 'demo' / 'tuned-model').resolve()}"
        hits = lib.search(image=tmp_path / "demo" / "scenes" / "scene_00007.png", k=1)
        assert hits[0].path.endswith("scene_00007.png") and hits[0].score >= 0.9999


def test_demo_in_chinese_runs_with_a_multilingual_model(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "demo"), "--scenes", "64", "--epochs", "1", "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert "Demo finished" in out and "背景的" in out  # Chinese queries were searched
    assert (tmp_path / "demo" / "model" / "tokenizer.json").is_file()
    caption = next((tmp_path / "demo" / "scenes").glob("*.txt")).read_text(encoding="utf-8")
    assert "背景的" in caption
