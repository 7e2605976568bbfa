"""BERT's uncased WordPiece tokenizer, read from a ``tokenizer.json``, in plain Python.

The encoder (:mod:`.encoder`) needs token ids for a window of at most a few hundred
characters. The ``tokenizers`` package does that too, but pulls ``huggingface_hub`` (a
hub client) into the runtime; this module reads the same file and gives the same ids for
the one configuration the shipped encoder uses (a test checks parity with ``tokenizers``
on thousands of texts in many scripts):

1. special tokens written literally in the text (``[SEP]``) are matched first, longest
   first, and become their own ids, as in training;
2. the BERT normaliser: control and format characters dropped, whitespace made a space,
   spaces put around CJK ideographs, accents stripped (NFD, nonspacing marks dropped),
   lower case;
3. split on whitespace, and every punctuation character (Unicode P*, or ASCII punctuation)
   is a word of its own;
4. WordPiece: the longest vocabulary entry from the left, continuations prefixed ``##``;
   a word with no full cover (or over 100 characters) is ``[UNK]``;
5. ``[CLS] ... [SEP]``, the middle cut to ``max_tokens - 2``.

A file with any other configuration is refused rather than tokenised differently.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from pathlib import Path
from typing import Any

# Unicode White_Space (what Rust's char::is_whitespace tests), as the BERT normaliser sees it
_WHITE = frozenset("\t\n\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                   "\u200a\u2028\u2029\u202f\u205f\u3000")
# control, format, private-use and surrogate characters are dropped; unassigned ones (Cn) are
# kept (they become [UNK]), as the Rust normaliser does
_DROPPED = frozenset({"Cc", "Cf", "Co", "Cs"})
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_EXPECTED = {
    "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                   "strip_accents": None, "lowercase": True},
    "pre_tokenizer": {"type": "BertPreTokenizer"},
}


def _is_cjk(cp: int) -> bool:
    return any(a <= cp <= b for a, b in _CJK)


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch)[0] == "P"


class WordPiece:
    """Token ids for texts, as the ``tokenizer.json`` at ``path`` gives them."""

    def __init__(self, path: Path) -> None:
        spec: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        for key, want in _EXPECTED.items():
            if spec.get(key) != want:
                raise ValueError(f"{path}: {key} is {spec.get(key)!r}, this tokenizer handles only {want!r}")
        model = spec.get("model") or {}
        if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix") != "##":
            raise ValueError(f"{path}: model is not a '##' WordPiece model")
        self.vocab: dict[str, int] = model["vocab"]
        self.unk = self.vocab[model["unk_token"]]
        self.max_chars = int(model.get("max_input_chars_per_word", 100))
        self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.specials: dict[str, int] = {t["content"]: t["id"] for t in spec.get("added_tokens", [])
                                         if t.get("special") and not t.get("normalized")}
        self._special_re = (re.compile("|".join(map(re.escape, sorted(self.specials, key=len, reverse=True))))
                            if self.specials else None)

    def encode(self, text: str, max_tokens: int) -> list[int]:
        """``[CLS]`` + the text's ids (at most ``max_tokens - 2``) + ``[SEP]``."""
        room = max_tokens - 2
        ids: list[int] = []
        at = 0
        matches = list(self._special_re.finditer(text)) if self._special_re is not None else []
        for m in [*matches, None]:
            piece = text[at:m.start()] if m is not None else text[at:]
            for word in self._words(piece):
                ids.extend(self._pieces(word))
                if len(ids) >= room:
                    return [self.cls, *ids[:room], self.sep]
            if m is not None:
                ids.append(self.specials[m.group()])
                at = m.end()
        return [self.cls, *ids[:room], self.sep]

    @staticmethod
    def normalise(text: str) -> str:
        out: list[str] = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch) in _DROPPED and ch not in "\t\n\r"):
                continue  # dropped first: \v, \f and U+0085 are controls here, not spaces
            if ch in _WHITE:
                out.append(" ")
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        s = unicodedata.normalize("NFD", "".join(out))
        # lower case one character at a time (no final-sigma rule, as in training)
        return "".join(c.lower() for c in s if unicodedata.category(c) != "Mn")

    def _words(self, text: str) -> list[str]:
        words: list[str] = []
        for chunk in self.normalise(text).split():
            start = 0
            for i, ch in enumerate(chunk):
                if _is_punct(ch):
                    if start < i:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def _pieces(self, word: str) -> list[int]:
        if len(word) > self.max_chars:
            return [self.unk]
        out: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                tid = self.vocab.get(sub)
                if tid is not None:
                    out.append(tid)
                    break
                end -= 1
            else:
                return [self.unk]
            start = end
        return out
