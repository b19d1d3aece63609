"""The coherence governor on tiny random models: configuration, per-sample back-off, measured
ranges, zero intensity (the conformance suite checks every adapter too)."""

from __future__ import annotations

import pytest
import torch

import polysteer as ps
from polysteer.errors import ConfigError, SteeringError
from polysteer.plugins.text.testing import tiny_text_adapter
from polysteer.steering.governor import Governor, range_from_values
from polysteer.testing import probe_style

PROMPTS = ["hello world", "the cat sat"]


@pytest.fixture(scope="module")
def text():
    adapter = tiny_text_adapter()
    site = adapter.sites()[len(adapter.sites()) // 2]
    return adapter, probe_style(adapter, site, PROMPTS)


def test_style_yaml_round_trip_and_errors(tmp_path):
    style = ps.Style.from_dict({"name": "g", "components": [{"dictionary": "d", "feature": 0}],
                                "governor": {"signal": "entropy", "max": 3.0, "backoff": 0.25}})
    assert style.governor == Governor(signal="entropy", max=3.0, backoff=0.25)
    style.save(tmp_path / "g.yaml")
    assert ps.Style.load(tmp_path / "g.yaml").governor == style.governor
    on = ps.Style.from_dict({"components": [{"dictionary": "d", "feature": 0}], "governor": None})
    assert on.governor == Governor()
    assert (style + on).governor == style.governor
    with pytest.raises(ConfigError, match="governor.backof: unknown key"):
        ps.Style.from_dict({"governor": {"backof": 0.5}})
    with pytest.raises(ConfigError, match="governor.backoff"):
        Governor(backoff=1.5)
    with pytest.raises(ConfigError, match="min .* must be below max"):
        Governor(min=2.0, max=1.0)


def test_unknown_signal_names_the_offered_ones(text):
    adapter, style = text
    with pytest.raises(SteeringError, match="offers: entropy, activation"), \
            ps.steer(adapter, style, 1.0, governor="entrop"):
        pass


def test_the_style_governor_is_used_and_steer_overrides_it(text):
    adapter, style = text
    governed = ps.Style(name="s", components=style.components,
                        governor=Governor(signal="entropy", max=-1e30, backoff=0.0))
    with ps.steer(adapter, governed, 4.0) as run:
        adapter.generate(PROMPTS, max_new_tokens=4)
    assert run.governor.signal_name == "entropy"
    assert run.governor_trace()[-1]["gain"] == [0.0, 0.0]
    with ps.steer(adapter, governed, 4.0, governor={"signal": "entropy", "max": 1e30}) as run:
        adapter.generate(PROMPTS, max_new_tokens=4)
    assert run.governor_trace()[-1]["gain"] == [1.0, 1.0]


def test_gain_backs_off_and_recovers_per_sample(text):
    adapter, style = text
    with ps.steer(adapter, style, 0.0) as run:
        adapter.generate(PROMPTS, max_new_tokens=6)
    # an entropy bound between the two rows' values: only the row above it backs off
    with ps.steer(adapter, style, 0.0, governor={"signal": "entropy", "max": 1e30, "smooth": 0}) as run:
        adapter.generate(PROMPTS, max_new_tokens=6)
    first = run.governor_trace()[0]["signal"]
    bound = sum(first) / 2
    assert first[0] != first[1]
    high = 0 if first[0] > first[1] else 1
    with ps.steer(adapter, style, 0.0, governor={"signal": "entropy", "max": bound, "smooth": 0,
                                                 "backoff": 0.5, "recover": 0.25}) as run:
        adapter.generate(PROMPTS, max_new_tokens=6)
    trace = run.governor_trace()
    gains = [t["gain"] for t in trace]
    prev = [1.0, 1.0]
    for t in trace:
        for r in range(2):
            expected = prev[r] * 0.5 if t["signal"][r] > bound else min(1.0, prev[r] + 0.25)
            assert t["gain"][r] == pytest.approx(expected)
        prev = t["gain"]
    assert gains[0][high] == 0.5 and gains[0][1 - high] == 1.0


def test_measured_range_comes_from_the_unsteered_model(text):
    adapter, style = text
    with ps.steer(adapter, style, 2.0, governor="entropy") as run:
        adapter.generate(PROMPTS, max_new_tokens=4)
    bound = run.governor.ranges[""].describe()
    assert bound["source"] == "neutral probes" and len(bound["max"]) == 10
    # the tiny random model's entropy is near log(vocabulary) everywhere: the bound sits there
    vocab = adapter.model.config.vocab_size
    assert all(abs(m - torch.log(torch.tensor(float(vocab))).item()) < 0.5 for m in bound["max"])


def test_range_from_values_uses_quantiles_per_progress_slice():
    values = torch.cat([torch.linspace(0, 1, 100), torch.linspace(10, 11, 100)])
    progress = torch.cat([torch.zeros(100), torch.ones(100)])
    r = range_from_values(values, progress, Governor(quantile=0.9, margin=0.0), two_sided=True)
    assert r.hi[0] == pytest.approx(0.9, abs=0.02) and r.lo[0] == pytest.approx(0.1, abs=0.02)
    assert r.hi[-1] == pytest.approx(10.9, abs=0.02)
    one = range_from_values(values, progress, Governor(), two_sided=False)
    assert torch.isinf(one.lo).all()


def test_activation_governor_limits_the_norm_within_the_pass(text):
    adapter, style = text
    site = style.components[0].dictionary.info.site
    with ps.steer(adapter, style, 8.0, capture=[site]) as free:
        adapter.generate(PROMPTS, max_new_tokens=4)
    with ps.steer(adapter, style, 8.0, capture=[site], governor="activation") as run:
        adapter.generate(PROMPTS, max_new_tokens=4)
    bound = run.governor.ranges[site]
    norm = bound.norm
    steered = run.captured(site).norm(dim=-1)
    unlimited = free.captured(site).norm(dim=-1)
    assert unlimited.mean() / norm > float(bound.hi[0]) * 2
    assert steered.mean() / norm < float(bound.hi[0]) * 1.25


def test_a_range_measured_under_the_style_at_its_calibrated_intensity(text):
    adapter, style = text
    with ps.steer(adapter, style, 3.0, governor={"signal": "entropy", "at": 1.0, "quantile": 0.5}) as run:
        adapter.generate(PROMPTS, max_new_tokens=4)
    bound = run.governor.ranges[""]
    assert bound.source == "neutral probes under the style at intensity 1"
    with ps.steer(adapter, style, 3.0, governor={"signal": "entropy"}) as plain:
        adapter.generate(PROMPTS, max_new_tokens=4)
    assert not torch.equal(bound.hi, plain.governor.ranges[""].hi)  # measured under the style
