"""Core label-by-effect on the reference model, with an effect measure from a throwaway plugin."""

from __future__ import annotations

import math

import pytest
import torch

import polysteer as ps
from polysteer.errors import RegistryError
from polysteer.features.labels import load_labels, set_label
from polysteer.models.reference import reference_prompts
from polysteer.workflows.label_effect import (
    Candidate,
    EffectMeasure,
    choose_labels,
    label_by_effect,
    measure_effects,
    probe_style,
)

SITE = "blocks.1.resid_post"
TOKEN = 7


def token_logprobs(adapter, inputs, style, intensity, options):
    """Per prompt: mean log-probability of ``options["token"]`` and of token 3 over its positions."""
    with ps.steer(adapter, style, intensity):
        logp = adapter.logits(inputs).log_softmax(-1)
    return {"logprob": logp[..., options["token"]].mean(-1), "other": logp[..., 3].mean(-1)}


class EffectPlugin:
    @ps.hookimpl
    def polysteer_register_effect_measures(self, registry):
        registry.register("token-logprob", EffectMeasure(token_logprobs, "text", "log-prob of a token"))


@pytest.fixture
def model(plugin_manager, register_plugin):
    register_plugin(EffectPlugin(), "effects")
    return ps.load_model("reference", plugins=plugin_manager)


@pytest.fixture
def dictionary(model):
    """Feature 0 raises TOKEN's probability (its unembedding row), feature 1 lowers it."""
    u = model.model.unembed.weight[TOKEN].detach().clone()
    return ps.direction_set([u, -u], ["up", "down"], site=SITE, site_norm=5.0,
                            model=model.model_fingerprint, method="planted")


PROMPTS = reference_prompts(samples=8, length=6)


def test_a_planted_feature_is_labelled_and_a_null_one_rejected(model, dictionary, tmp_path):
    found = [Candidate(0, "logprob", 0.9), Candidate(1, "logprob", 0.9)]  # 1 claims to raise it too
    result = label_by_effect(model, dictionary, found, PROMPTS, "token-logprob", intensity=1.0,
                             floors=0.05, significance=3.0, options={"token": TOKEN}, folder=tmp_path)
    assert dictionary.labels == ["logprob+ (0)", "down"]
    assert list(result.evidence) == ["logprob+ (0)"]
    evidence = result.evidence["logprob+ (0)"]
    assert evidence["change"] > 0.05 and evidence["change"] > 3 * evidence["standard_error"]
    assert evidence["intensity"] == 1.0 and evidence["floor"] == 0.05
    assert set(evidence["side_effects"]) == {"other"}  # the other measure's change is recorded
    held, rejected = result.outcomes
    assert held.holds and not rejected.holds and rejected.change < 0
    # the evidence is written beside the dictionary: labels.json with scores and flags
    reports = load_labels(tmp_path)
    assert reports[0].label == "logprob+ (0)" and not reports[0].flagged
    assert reports[0].details["effect"]["change"] == evidence["change"]
    assert reports[1].flagged and reports[1].effect_score < 0
    assert [t["feature"] for t in reports[1].details["tried"]] == [1]


def test_a_negative_correlation_labels_the_feature_that_lowers_the_measure(model, dictionary):
    result = label_by_effect(model, dictionary, [Candidate(1, "logprob", -0.8)], PROMPTS, "token-logprob",
                             intensity=1.0, floors=0.05, options={"token": TOKEN})
    assert dictionary.labels[1] == "logprob- (1)" and result.evidence["logprob- (1)"]["change"] < 0


def test_an_effect_below_the_floor_labels_nothing(model, dictionary):
    result = label_by_effect(model, dictionary, [Candidate(0, "logprob")], PROMPTS, "token-logprob",
                             intensity=1.0, floors={"logprob": 1e3}, options={"token": TOKEN})
    assert result.evidence == {} and dictionary.labels == ["up", "down"]
    assert result.reports[0].flagged and result.reports[0].effect_score > 0


def test_zero_intensity_changes_nothing_and_nothing_holds(model, dictionary):
    (outcome,) = measure_effects(model, dictionary, [Candidate(0, "logprob")], PROMPTS, "token-logprob",
                                 intensity=0.0, options={"token": TOKEN})
    assert outcome.change == 0.0 and outcome.standard_error == 0.0 and not outcome.holds
    assert outcome.units == len(PROMPTS)


def test_the_strongest_or_the_first_effect_names_a_feature(model, dictionary):
    outcomes = measure_effects(model, dictionary, [Candidate(0, "other", -1.0), Candidate(0, "logprob")],
                               PROMPTS, "token-logprob", intensity=1.0, options={"token": TOKEN})
    assert all(o.holds for o in outcomes)  # raising TOKEN lowers token 3 too
    strongest = max(outcomes, key=lambda o: o.strength)
    assert list(choose_labels(outcomes).values()) == [strongest]
    assert list(choose_labels(outcomes, prefer="first")) == ["other- (0)"]


def test_user_labels_in_labels_json_are_kept(model, dictionary, tmp_path):
    dictionary.save(tmp_path)
    set_label(tmp_path, 0, "my token")
    label_by_effect(model, dictionary, [Candidate(0, "logprob")], PROMPTS, "token-logprob",
                    intensity=1.0, options={"token": TOKEN}, folder=tmp_path)
    report = load_labels(tmp_path)[0]
    assert report.label == "my token" and report.source == "user" and report.details["effect"]
    assert ps.resolve_dictionary(tmp_path).labels[0] == "my token"


def test_an_unknown_effect_measure_gets_a_did_you_mean(model, dictionary):
    with pytest.raises(RegistryError, match="Did you mean 'token-logprob'"):
        measure_effects(model, dictionary, [Candidate(0, "logprob")], PROMPTS, "token-logprb", intensity=1.0)


def test_units_where_the_measure_is_undefined_are_left_out(model, dictionary):
    def partly_nan(adapter, inputs, style, intensity, options):
        values = token_logprobs(adapter, inputs, style, intensity, options)["logprob"]
        values[:3] = math.nan
        return {"logprob": values}

    (outcome,) = measure_effects(model, dictionary, [Candidate(0, "logprob")], PROMPTS,
                                 EffectMeasure(partly_nan, "text"), intensity=1.0, options={"token": TOKEN})
    assert outcome.units == len(PROMPTS) - 3 and math.isfinite(outcome.change) and outcome.holds


def test_probe_style_adds_one_feature_within_a_mask(dictionary):
    style = probe_style(dictionary, 1, {"kind": "generated"})
    (component,) = style.components
    assert component.dictionary is dictionary and component.feature == 1
    assert component.intervention == "add" and component.positions == {"kind": "generated"}
    assert probe_style(dictionary, 0).components[0].positions == {"kind": "all"}


def test_every_modality_registers_an_effect_measure(plugin_manager):
    entries = {e.name: e for e in plugin_manager.effect_measures}
    assert {"text-logprob", "image-avatar", "voice-acoustics"} <= set(entries)
    assert {entries[n].value.modality for n in entries} >= {"text", "image", "voice"}


def test_a_measure_undefined_everywhere_holds_nothing_and_saves_as_null(model, dictionary, tmp_path):
    def never(adapter, inputs, style, intensity, options):
        return {"pitch": torch.full((len(inputs),), math.nan)}

    result = label_by_effect(model, dictionary, [Candidate(0, "pitch")], PROMPTS,
                             EffectMeasure(never, "voice"), intensity=1.0, folder=tmp_path)
    (outcome,) = result.outcomes
    assert outcome.units == 0 and not outcome.holds and result.evidence == {}
    report = load_labels(tmp_path)[0]  # strict JSON: no NaN or Infinity in the file
    assert report.flagged and report.effect_score is None
    assert report.details["tried"][0]["change"] is None
    assert "NaN" not in (tmp_path / "labels.json").read_text()


def test_correlated_candidates_pick_the_features_that_track_each_measure():
    from polysteer.workflows.label_effect import correlated_candidates

    g = torch.Generator().manual_seed(0)
    codes = torch.rand(100, 4, generator=g)
    codes[:, 3] = 0.0  # never fires: never a candidate
    measures = {"up": 2 * codes[:, 1] + 0.01 * torch.randn(100, generator=g), "down": -codes[:, 2]}
    found = correlated_candidates(codes, measures, per_measure=1, positions=lambda f: {"kind": "f", "n": f})
    assert [(c.feature, c.measure) for c in found] == [(1, "up"), (2, "down")]
    assert found[0].correlation > 0.99 and found[1].correlation == pytest.approx(-1.0, abs=1e-5)
    assert found[1].positions == {"kind": "f", "n": 2}
    assert all(c.feature != 3 for c in correlated_candidates(codes, measures, per_measure=4))


def test_a_candidate_naming_a_measure_the_effect_measure_lacks_fails_before_any_steering(model, dictionary):
    calls = []

    def counted(adapter, inputs, style, intensity, options):
        calls.append(style)
        return token_logprobs(adapter, inputs, style, intensity, options)

    with pytest.raises(ps.PolysteerError, match="gives no 'logprb'.*logprob, other"):
        measure_effects(model, dictionary, [Candidate(0, "logprob"), Candidate(1, "logprb")], PROMPTS,
                        EffectMeasure(counted, "text"), intensity=1.0, options={"token": TOKEN})
    assert calls == [None]  # only the baseline ran
