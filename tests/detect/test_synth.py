"""The synthetic tool outputs the classifier's document channel is trained on."""

from __future__ import annotations

import random

from shieldwall.detect import synth


def test_pairs_are_reproducible_from_the_seed() -> None:
    a = synth.tool_outputs(20, random.Random(5))
    b = synth.tool_outputs(20, random.Random(5))
    assert a == b


def test_each_pair_is_one_benign_output_and_its_injected_twin() -> None:
    texts, labels = synth.tool_outputs(50, random.Random(1))
    assert labels == [0, 1] * 50
    for good, bad in zip(texts[::2], texts[1::2], strict=True):
        assert good != bad
        assert len(bad) > len(good)  # the twin only adds the spliced instruction


def test_training_and_validation_halves_share_no_injection_phrasing() -> None:
    train = {synth.injection(random.Random(i), part=0) for i in range(300)}
    val = {synth.injection(random.Random(i), part=1) for i in range(300)}
    assert not train & val
    address_train = set(synth._half(synth._ADDRESS, 0))
    address_val = set(synth._half(synth._ADDRESS, 1))
    assert not (address_train & address_val) - {""}


def test_task_prompts_are_benign_requests_without_model_addressed_overrides() -> None:
    prompts = synth.task_prompts(200, random.Random(3))
    assert len(prompts) == 200
    for p in prompts:
        assert "system override" not in p.lower()
        assert "your real task" not in p.lower()
