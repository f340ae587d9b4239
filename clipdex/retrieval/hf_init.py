"""`model init --text-tower hf`: a small transformer text tower and its tokenizer, made offline.

The tokenizer is trained with the ``tokenizers`` library (BPE on "▁"-marked words as SentencePiece
writes them, each CJK character a word of its own as multilingual BERT splits them, NFKC, XLM-R's
special tokens and ``<s> … </s>`` around each text) on a corpus the user gives or on a small
built-in multilingual one, or it is copied from one the user hands over (a ``tokenizer.json`` or a
folder of tokenizer files). The transformer is an XLM-RoBERTa configuration sized by the caller,
randomly initialised by open_clip's own factory with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clipdex.errors import ModelError
from clipdex.retrieval.hf_text import HF_CONFIG, SELF, require_transformers, save_tokenizer

# CJK ideographs (with extension A and compatibility forms), kana and hangul syllables
CJK = "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]"
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # XLM-R's order: ids 0..4
DEFAULT_VOCAB = 8000
# A small transformer: seconds to build, trainable on a CPU. Any key of the transformers config
# of ``model_type`` may be given in "hf_text_config" of a JSON model config.
DEFAULT_TEXT = {"model_type": "xlm-roberta", "hidden_size": 256, "num_hidden_layers": 4,
                "num_attention_heads": 4, "intermediate_size": 1024}  # fmt: skip
TEXT_CFG = {"hf_pooler_type": "mean_pooler", "hf_proj_type": "mlp"}  # as xlm-roberta-base-ViT-B-32

_COLOURS = [("red", "红色"), ("green", "绿色"), ("blue", "蓝色"), ("yellow", "黄色"), ("purple", "紫色"),
            ("orange", "橙色"), ("white", "白色"), ("black", "黑色"), ("gray", "灰色")]  # fmt: skip
_THINGS = [("dog", "狗"), ("cat", "猫"), ("circle", "圆形"), ("square", "正方形"),
           ("triangle", "三角形"), ("cross", "十字"), ("car", "汽车"), ("flower", "花"), ("bird", "鸟"),
           ("mountain", "山")]  # fmt: skip
_PLACES = [("on the beach", "在海边"), ("on the left", "在左边"), ("on the right", "在右边"),
           ("at the top", "在上方"), ("at the bottom", "在下方"), ("in the center", "在中间"),
           ("in the snow", "在雪地里"), ("at night", "在夜里"), ("in the city", "在城市里")]  # fmt: skip
_EXTRA = [
    "海边奔跑的狗", "东京的夜景和富士山", "一只猫在沙发上睡觉", "生日蛋糕和蜡烛", "下雨天的街道",
    "a dog running on the beach", "a photo of my family", "sunset over the sea", "snow on the mountains",
    "🐶🏖️ dog at the beach", "🐱 猫 cat", "🌸 cherry blossoms 樱花", "🎂🎉 party", "❤️ 😀 👍 🚗 🌧️ ☀️ 🌙",
    "Naïve café, déjà vu", "Straße und Brücke", "日本語のテキスト", "한국어 문장", "texte en français",
]  # fmt: skip


def builtin_corpus() -> list[str]:
    """Short captions in English and Chinese (and a little else), with emoji: enough to train a
    tokenizer for tests, the demo and trying things out offline."""
    lines = list(_EXTRA)
    for ce, cz in _COLOURS:
        for te, tz in _THINGS:
            for pe, pz in _PLACES:
                lines += [f"a {ce} {te} {pe}", f"{cz}{tz}{pz}", f"{cz}的{tz} {pe}"]
    for ce, cz in _COLOURS:  # the demo's scene captions in Chinese (clipdex.demo.scenes)
        lines += [f"{cz}背景", f"{cz}的", f"{ce} background"]
    return lines


def train_tokenizer(corpus: Iterable[str], vocab_size: int = DEFAULT_VOCAB) -> Any:
    """A ``tokenizers.Tokenizer`` trained on ``corpus`` (see the module's docstring)."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    # BPE, not SentencePiece's Unigram as XLM-R: the Unigram trainer here is not reproducible
    # (scores and ties vary from run to run), and a fixed seed must give the same model
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    # without spaces between Chinese words, BPE would learn whole captions as single tokens
    cjk = Regex(CJK)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Split(cjk, behavior="isolated")]
    )
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
    lines = [line.strip() for line in corpus if line.strip()]
    if not lines:
        raise ModelError("the tokenizer corpus is empty")
    tok.train_from_iterator(lines, trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return tok


def _wrap(tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    names = dict(zip(("bos", "pad", "eos", "unk", "mask"), SPECIALS))
    found = {k: v for k, v in names.items() if tok.token_to_id(v) is not None}
    alt = {"bos": "[CLS]", "pad": "[PAD]", "eos": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}  # BERT style
    for k, v in alt.items():
        if k not in found and tok.token_to_id(v) is not None:
            found[k] = v
    if "pad" not in found:
        raise ModelError("the tokenizer has no padding token (<pad> or [PAD])")
    kw = {f"{k}_token": v for k, v in found.items()}
    kw.update(cls_token=found.get("bos"), sep_token=found.get("eos"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in kw.items() if v})


def load_given_tokenizer(path: str | Path) -> Any:
    """A tokenizer the user hands over: a ``tokenizer.json`` file or a folder of tokenizer files."""
    path = Path(path).expanduser()
    try:
        if path.is_file():
            from tokenizers import Tokenizer

            return _wrap(Tokenizer.from_file(str(path)))
        if path.is_dir():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(path))
    except ModelError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"cannot read the tokenizer {path}: {first}") from e
    raise ModelError(
        f"tokenizer not found: {path} (give a tokenizer.json file or a folder of tokenizer files)"
    )


def read_corpus(path: str | Path) -> list[str]:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read the corpus {path}: {e}") from e


def write_text_tower(
    folder: Path, model_cfg: dict, text_config: dict | None = None, corpus: Iterable[str] | None = None,
    tokenizer: str | Path | None = None, vocab_size: int = DEFAULT_VOCAB,
) -> dict:  # fmt: skip
    """Write the tokenizer and transformer config into ``folder``; return ``model_cfg`` with a
    text_cfg for them (``hf_model_name`` "." — resolved by the caller while building)."""
    require_transformers()
    from transformers import AutoConfig

    hf_tok = load_given_tokenizer(tokenizer) if tokenizer else _wrap(
        train_tokenizer(corpus if corpus is not None else builtin_corpus(), vocab_size)
    )  # fmt: skip
    save_tokenizer(hf_tok, folder)
    old_text = model_cfg.get("text_cfg") or {}
    context = int(old_text.get("context_length") or 77)
    wanted = {**DEFAULT_TEXT, **(text_config or {})}
    model_type = wanted.pop("model_type")
    pad = hf_tok.pad_token_id
    ids = {"pad_token_id": pad, "bos_token_id": hf_tok.bos_token_id, "eos_token_id": hf_tok.eos_token_id}
    # RoBERTa numbers positions from pad_token_id + 1: room for the whole context after it
    positions = context + (pad + 1 if "roberta" in model_type else 0)
    base = {"vocab_size": len(hf_tok), "max_position_embeddings": max(positions, 8), **ids}
    try:
        cfg = AutoConfig.for_model(model_type, **{**base, **wanted})
    except (ValueError, TypeError) as e:
        raise ModelError(f"cannot make a '{model_type}' text tower: {e}") from e
    cfg.save_pretrained(str(folder))
    text_cfg = {"hf_model_name": SELF, "hf_tokenizer_name": SELF, **TEXT_CFG, "context_length": context}
    text_cfg.update({k: v for k, v in old_text.items() if k.startswith("hf_") and k in TEXT_CFG})
    assert (folder / HF_CONFIG).is_file()
    return {
        **{k: v for k, v in model_cfg.items() if k not in ("text_cfg", "custom_text")},
        "text_cfg": text_cfg,
    }
