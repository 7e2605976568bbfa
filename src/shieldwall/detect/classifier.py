"""A small learned injection classifier that runs on numpy alone.

Features are hashed character and word n-grams of the normalised, lower-cased text;
which n-grams and how many buckets is a :class:`FeatureSpec` recorded in the model's
card (the defaults, char 3-5-grams + word 1-2-grams in 2**18 buckets, are those of cards
without one). The model is a logistic regression trained by
``scripts/train_detector.py`` and shipped as ``models/injection-ngram.npz`` with a JSON
card; a second one, ``models/injection-ngram-doc``, is trained with synthetic tool
outputs and long-form documents for the document channel. A text is scored in windows
(512 characters, stride 256) and the highest window wins: an instruction buried in a
long tool result is not diluted by the pages around it. Because features are counts
scaled by 1/sqrt(n-grams in the window), every window's logit comes from two prefix sums
over the text, so scoring all windows costs about as much as scoring the text once.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..actions import Severity
from .base import Hit

DIM_BITS = 18
DIM = 1 << DIM_BITS
CHAR_NS = (3, 4, 5)
WINDOW = 512
STRIDE = 256
MODEL_DIR = Path(__file__).parent / "models"
MODEL_NAME = "injection-ngram"
DOC_MODEL_NAME = "injection-ngram-doc"  # the same kind of model, trained for tool outputs and documents

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_MUL = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xFF51AFD7ED558CCD)
_P = np.uint64(1000003)
_S33 = np.uint64(33)
_SEEDS = {n: np.uint64((n * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) for n in range(1, 9)}


def prepare(text: str) -> str:
    """Lower-case and collapse whitespace (the classifier's view of normalised text)."""
    return _WS.sub(" ", text.lower()).strip()


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """Which hashed n-grams a model uses (recorded in its card as ``features``)."""

    dim_bits: int = DIM_BITS
    char_ns: tuple[int, ...] = CHAR_NS
    word_ns: tuple[int, ...] = (1, 2)
    pad: bool = False  # a space before and after the text, so edge words get boundary grams

    @property
    def dim(self) -> int:
        return 1 << self.dim_bits

    def to_json(self) -> dict[str, Any]:
        return {"dim_bits": self.dim_bits, "char_ns": list(self.char_ns),
                "word_ns": list(self.word_ns), "pad": self.pad}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> FeatureSpec:
        if not d:
            return cls()
        return cls(int(d["dim_bits"]), tuple(int(x) for x in d["char_ns"]),
                   tuple(int(x) for x in d["word_ns"]), bool(d.get("pad", False)))


DEFAULT_SPEC = FeatureSpec()
_WORD_SALT = {1: 0, 2: 0x5BD1E995, 3: 0x2545F491, 4: 0x68E31DA4}


def _char_grams(codes: npt.NDArray[np.uint64], n: int, mask: np.uint64) -> npt.NDArray[np.uint64]:
    m = codes.shape[0] - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.full(m, _SEEDS[n], dtype=np.uint64)
    for k in range(n):
        h = h * _P + codes[k : k + m]
    h = h * _MIX
    h ^= h >> _S33
    return h & mask


def features(text: str, spec: FeatureSpec = DEFAULT_SPEC) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Hashed n-gram bucket ids and the character position where each starts.

    ``text`` must already be :func:`prepare`-d. Both arrays have the same length."""
    if not text:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    mask = np.uint64(spec.dim - 1)
    src = f" {text} " if spec.pad else text
    off = 1 if spec.pad else 0
    last = len(text) - 1
    codes = np.frombuffer(src.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    ids: list[npt.NDArray[Any]] = []
    pos: list[npt.NDArray[Any]] = []
    for n in spec.char_ns:
        g = _char_grams(codes, n, mask)
        ids.append(g)
        p = np.arange(g.shape[0], dtype=np.int64)
        if off:
            p = np.clip(p - off, 0, last)
        pos.append(p)
    words = [(m.start(), m.group(0)) for m in _WORD.finditer(text)]
    if words:
        wid: list[int] = []
        wpos: list[int] = []
        toks = [w for _, w in words]
        starts = [p for p, _ in words]
        for n in spec.word_ns:
            salt = _WORD_SALT[n]
            for i in range(len(toks) - n + 1):
                wid.append(zlib.crc32(" ".join(toks[i : i + n]).encode()) ^ salt)
                wpos.append(starts[i])
        if wid:
            w = np.array(wid, dtype=np.uint64) * _MUL
            w ^= w >> _S33
            ids.append(w & mask)
            pos.append(np.array(wpos, dtype=np.int64))
    return np.concatenate(ids).astype(np.int64), np.concatenate(pos)


def window_bounds(length: int, window: int = WINDOW, stride: int = STRIDE) -> list[tuple[int, int]]:
    """Character windows covering a text of ``length`` characters."""
    if length <= window:
        return [(0, length)]
    out = [(s, s + window) for s in range(0, length - window, stride)]
    out.append((length - window, length))
    return out


@dataclass(slots=True)
class NgramModel:
    weights: npt.NDArray[np.float32]
    bias: float
    threshold: float  # on the probability; chosen for 1% FPR on validation data
    card: dict[str, Any]
    window: int = WINDOW
    stride: int = STRIDE
    spec: FeatureSpec = DEFAULT_SPEC

    def logits(self, text: str) -> tuple[float, tuple[int, int]]:
        """The highest window logit and that window's span in the prepared text."""
        t = prepare(text)
        ids, pos = features(t, self.spec)
        if ids.shape[0] == 0:
            return self.bias, (0, 0)
        L = len(t)
        contrib = np.bincount(pos, weights=self.weights[ids], minlength=L + 1)
        counts = np.bincount(pos, minlength=L + 1).astype(np.float64)
        cs = np.concatenate(([0.0], np.cumsum(contrib)))
        cn = np.concatenate(([0.0], np.cumsum(counts)))
        bounds = window_bounds(L, self.window, self.stride)
        starts = np.array([b[0] for b in bounds])
        ends = np.array([b[1] for b in bounds])
        n = np.maximum(cn[ends] - cn[starts], 1.0)
        z = (cs[ends] - cs[starts]) / np.sqrt(n) + self.bias
        i = int(np.argmax(z))
        return float(z[i]), bounds[i]

    def score(self, text: str) -> float:
        z, _ = self.logits(text)
        return float(1.0 / (1.0 + np.exp(-z)))

    def scan(self, text: str) -> list[Hit]:
        z, span = self.logits(text)
        p = float(1.0 / (1.0 + np.exp(-z)))
        if p < self.threshold:
            return []
        return [Hit("detect.injection.classifier",
                    f"injection classifier score {p:.3f} (threshold {self.threshold:.3f})",
                    score=p, span=span, evidence=prepare(text)[span[0]:span[0] + 80],
                    severity=Severity.HIGH if p >= 0.95 else Severity.MEDIUM)]


def sparse_rows(texts: list[str], spec: FeatureSpec = DEFAULT_SPEC) -> tuple[list[int], list[int], list[float]]:
    """Training helper: (row, col, value) triplets of the window features, one row per
    text. Texts longer than ``window`` must be split by the caller (training does)."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, text in enumerate(texts):
        ids, _ = features(prepare(text), spec)
        if ids.shape[0] == 0:
            continue
        u, c = np.unique(ids, return_counts=True)
        scale = 1.0 / np.sqrt(ids.shape[0])
        rows.extend([r] * u.shape[0])
        cols.extend(u.tolist())
        vals.extend((c * scale).tolist())
    return rows, cols, vals


def save(path: Path, weights: npt.NDArray[np.floating[Any]], bias: float, threshold: float,
         card: dict[str, Any]) -> None:
    np.savez_compressed(path.with_suffix(".npz"), weights=weights.astype(np.float16),
                        bias=np.array([bias]), threshold=np.array([threshold]))
    path.with_suffix(".json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def load(path: Path) -> NgramModel:
    with np.load(path.with_suffix(".npz")) as z:
        weights = z["weights"].astype(np.float32)
        bias = float(z["bias"][0])
        threshold = float(z["threshold"][0])
    card = json.loads(path.with_suffix(".json").read_text())
    spec = FeatureSpec.from_json(card.get("features"))
    if weights.shape != (spec.dim,):
        raise ValueError(f"model {path} has {weights.shape[0]} weights, expected {spec.dim}")
    return NgramModel(weights, bias, threshold, card, spec=spec)


@lru_cache(maxsize=1)
def default_model() -> NgramModel:
    """The shipped model (loaded once; no network, no download)."""
    return load(MODEL_DIR / MODEL_NAME)


@lru_cache(maxsize=1)
def doc_model() -> NgramModel | None:
    """The document-channel model (tool outputs, retrieved documents, e-mails, pages), or
    ``None`` when none ships. Its threshold was set on benign validation documents."""
    path = MODEL_DIR / DOC_MODEL_NAME
    if not path.with_suffix(".npz").exists():
        return None
    return load(path)


def scan(text: str) -> list[Hit]:
    return default_model().scan(text)
