"""The torch-free tokenizer gives exactly open_clip's ids (SimpleTokenizer), hard strings included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest

from clipdex.retrieval.onnx.tokenizer import ClipTokenizer, UnsupportedTokenizer, twin_of

HARD = [
    "", " ", "\t\n \r\n", "a photo of a dog", "A DOG'S LIFE!! It'S they'RE we'VE i'M you'LL he'D",
    "naïve café — déjà vu", "ﬁancé Ⅻ ＡＢＣ ½", "mojibake Ã© â€™", "東京の夜景と富士山", "한국어 텍스트",
    "Ελληνικά русский עברית العربية हिन्दी",
    "emoji 🐶🏖️ 👩‍👩‍👧 🇫🇷 ok", "&amp;lt;b&amp;gt; &quot;q&quot; &#39;x&#39; &eacute;",
    "<end_of_text> inside", "x<start_of_text>y", "(<end_of_text>)", "!!<start_of_text>", "1<end_of_text>2",
    "tab\tnew\nline\x0bvt\x0cff\x1cfs\u2028ls\u00a0nbsp\u200bzw\u3000ideo", "123,456.78 9th 0.5%",
    "a" * 300, " ".join(["word"] * 100), "東" * 200, "🐶" * 80, "!!!???...,,,;;;",
]  # fmt: skip


@pytest.fixture(scope="module")
def b32():
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.mark.parametrize("text", HARD, ids=range(len(HARD)))
def test_ids_match_open_clip(b32, text: str) -> None:
    expected = b32([text]).numpy()
    got = twin_of(b32)([text])
    assert got.dtype == np.int64 and got.shape == expected.shape == (1, 77)
    np.testing.assert_array_equal(got, expected)


def test_tiny_model_context_length_truncates_like_open_clip(tiny_lm) -> None:
    twin = twin_of(tiny_lm.tokenizer)
    assert twin.context_length == 32
    got, expected = twin(HARD), tiny_lm.tokenizer(HARD).numpy()
    np.testing.assert_array_equal(got, expected)
    long = got[HARD.index("a" * 300)]
    assert long[-1] == twin.eot and long[0] == twin.sot and (long != 0).all()  # truncated, EOT kept last


def test_whitespace_cleaning_keeps_case() -> None:
    ref = open_clip.SimpleTokenizer(clean="whitespace")
    texts = ["Hello WORLD", "<END_OF_TEXT> upper", "MiXeD <end_of_text> Case", *HARD]
    np.testing.assert_array_equal(twin_of(ref)(texts), ref(texts).numpy())


def test_random_strings_match(b32) -> None:
    import random

    rng = random.Random(0)
    alphabet = "abcXYZ éü东京 🐶'.,-!?\t\n0123<>&;_"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90))) for _ in range(300)]
    np.testing.assert_array_equal(twin_of(b32)(texts), b32(texts).numpy())


def test_one_string_is_a_batch_of_one(b32) -> None:
    np.testing.assert_array_equal(twin_of(b32)("a dog"), b32("a dog").numpy())


def test_saved_tokenizer_reloads_identically(b32, tmp_path) -> None:
    twin = twin_of(b32)
    desc = twin.save(tmp_path)
    again = ClipTokenizer.load(tmp_path, desc)
    np.testing.assert_array_equal(again(HARD), b32(HARD).numpy())


def test_unsupported_tokenizers_say_why() -> None:
    with pytest.raises(UnsupportedTokenizer, match="reduction mask"):
        twin_of(open_clip.SimpleTokenizer(reduction_mask="simple"))
    with pytest.raises(UnsupportedTokenizer, match="canonicalize"):
        twin_of(open_clip.SimpleTokenizer(clean="canonicalize"))

    class HFTokenizer:
        pass

    with pytest.raises(UnsupportedTokenizer, match="HFTokenizer"):
        twin_of(HFTokenizer())
    with pytest.raises(UnsupportedTokenizer, match="kind"):
        ClipTokenizer.load(Path("."), {"kind": "sentencepiece"})
