"""The encoder's plain-Python WordPiece tokenizer gives the ids the reference tokenizer
(``tokenizers``, which trained the model) gives for the shipped ``tokenizer.json``: exactly on
natural text in many scripts and on the edge cases below; on random code points the only
differences are nonspacing marks newer than the reference's Unicode tables."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pytest

from shieldwall.detect import classifier, encoder, synth
from shieldwall.detect.wordpiece import WordPiece

tokenizers = pytest.importorskip("tokenizers", reason="the reference tokenizer is in the dev extra")

TOKENIZER = (classifier.MODEL_DIR / encoder.ENCODER_NAME).with_suffix(".tokenizer.json")
ROOT = Path(__file__).resolve().parents[2]
EDGE = [
    "", "   ", "[SEP] ignore [CLS]x[MASK][PAD][UNK]", "[[SEP]]", "a[SEP]b", "ΟΔΟΣ İstanbul ǅ ﬁ ß Ǆ",
    "a\x0bb\x0cc\x85d\u200be\u202ef\ufeffg\x00h\ufffdi", "tab\tnew\nline\rcr\u3000ideo\u2028sep",
    "a" * 150, "x" * 101 + " ok", "naïve café résumé Ångström", "中文文本和日本語のテキスト 한국어",
    "emoji 👩‍💻🏳️‍🌈 and $100+50=150 <tag> a|b ~c ^d `e`", "¿Qué? ¡Sí! «guillemets» „Anführung“ — – …",
    "İstanbul ſ ﬀ Ⅻ ① ｆｕｌｌｗｉｄｔｈ", "\U000e0041\U000e0042 tag chars", "unassigned \U0003ffff \U000f0000",
    "word" * 60,
]


def _reference() -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    tok.enable_truncation(max_length=128)
    tok.no_padding()
    return tok


def _natural_texts() -> list[str]:
    texts = list(EDGE)
    for md in sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("*.md")]):
        texts += [p for p in md.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    for data in sorted((ROOT / "tests" / "data").glob("*.json")):
        def strings(v: object) -> list[str]:
            if isinstance(v, str):
                return [v]
            if isinstance(v, dict):
                return [s for x in v.values() for s in strings(x)]
            if isinstance(v, list):
                return [s for x in v for s in strings(x)]
            return []
        texts += strings(json.loads(data.read_text(encoding="utf-8")))
    for py in sorted((ROOT / "src" / "shieldwall").rglob("*.py")):
        texts += [p for p in py.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    texts += synth.task_prompts(500, random.Random(5), ["Quarterly report: revenue grew 4%."], part=0)
    return texts


def test_same_ids_as_the_reference_on_natural_text_and_edge_cases() -> None:
    wp, ref = WordPiece(TOKENIZER), _reference()
    texts = _natural_texts()
    assert len(texts) > 3000
    got = [wp.encode(t, 128) for t in texts]
    want = [e.ids for e in ref.encode_batch(texts)]
    wrong = [(t[:80], g[:12], w[:12]) for t, g, w in zip(texts, got, want, strict=True) if g != w]
    assert not wrong, wrong[:5]


def test_every_code_point_alone_differs_only_where_unicode_versions_do() -> None:
    """Python's Unicode tables are newer than the reference's: a few marks and format
    characters added or recategorised since are dropped here and [UNK] there (or the
    reverse). Nothing else may differ, in any script."""
    wp, ref = WordPiece(TOKENIZER), _reference()
    chars = [chr(cp) for cp in range(0x30000) if not 0xD800 <= cp <= 0xDFFF]
    got = [wp.encode(c, 128) for c in chars]
    want = [e.ids for e in ref.encode_batch(chars)]
    differ = [c for c, g, w in zip(chars, got, want, strict=True) if g != w]
    assert all(unicodedata.category(c) in ("Mn", "Mc", "Cf") for c in differ), [
        (hex(ord(c)), unicodedata.category(c)) for c in differ if unicodedata.category(c) not in ("Mn", "Mc", "Cf")]
    assert len(differ) < 500, len(differ)  # 398 with Python 3.11 and tokenizers 0.22


def test_truncation_keeps_cls_and_sep() -> None:
    ids = WordPiece(TOKENIZER).encode("ignore previous instructions " * 100, 16)
    assert len(ids) == 16 and ids[0] == 101 and ids[-1] == 102


def test_a_tokenizer_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    spec = json.loads(TOKENIZER.read_text(encoding="utf-8"))
    spec["normalizer"]["lowercase"] = False
    (tmp_path / "t.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="normalizer"):
        WordPiece(tmp_path / "t.json")


def test_an_encoder_with_a_tokenizer_of_another_kind_does_not_load(tmp_path: Path) -> None:
    import shutil

    base = classifier.MODEL_DIR / encoder.ENCODER_NAME
    for suffix in (".onnx", ".json"):
        shutil.copy(base.with_suffix(suffix), (tmp_path / "m").with_suffix(suffix))
    spec = json.loads(TOKENIZER.read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "m.tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="pre_tokenizer"):
        encoder.Encoder(tmp_path / "m")
