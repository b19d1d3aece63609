"""Styles: YAML files, validation with key paths, and the add / scale / blend algebra."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml

from polysteer.errors import ConfigError
from polysteer.features.dictionary import DictionaryInfo, DirectionSet
from polysteer.steering.style import Component, Style, blend

FULL = {
    "name": "friendly-concise",
    "description": "warm but short",
    "components": [
        {"dictionary": "dictionaries/mood", "feature": "friendly", "weight": 0.7,
         "schedule": {"kind": "ramp", "end": 0.3}, "positions": "generated"},
        {"concept": "concise", "weight": 0.5, "intervention": "clamp", "options": {"value": 2.0},
         "branches": ["cond"]},
        {"name": "cautious", "dictionary": "dictionaries/mood", "feature": 3, "enabled": False,
         "schedule": {"kind": "piecewise", "points": [[0.0, 1.0], [1.0, 0.0]]}},
    ],
    "rules": [
        {"name": "scam-alarm",
         "when": {"dictionary": "dictionaries/scam", "feature": "scam", "above": 0.5, "for_steps": 2},
         "then": {"apply": "cautious", "steps": 20}},
        {"when": {"dictionary": "dictionaries/scam", "feature": 0, "above": 1.5},
         "then": {"stop": "friendly"}},
    ],
    "concepts": {
        "concise": {"text": {"dictionary": "dictionaries/length", "feature": "short"},
                    "voice": {"dictionary": "dictionaries/rate", "feature": "fast", "weight": 0.8}},
    },
}


def _style(**changes) -> Style:
    data = copy.deepcopy(FULL)
    data.update(changes)
    return Style.from_dict(data)


def _data(**components) -> dict:
    """FULL with some component fields replaced: ``_data(c1={"wieght": 1})``."""
    data = copy.deepcopy(FULL)
    for key, fields in components.items():
        data["components"][int(key[1:])].update(fields)
    return data


# -- parsing and files ---------------------------------------------------------------------------
def test_parsed_style_fields():
    s = _style()
    assert [c.name for c in s.components] == ["friendly", "concise", "cautious"]
    friendly, concise, cautious = s.components
    assert friendly.schedule == {"kind": "ramp", "end": 0.3}
    assert friendly.positions == {"kind": "generated"}
    assert friendly.intervention == "add" and friendly.enabled
    assert concise.concept == "concise" and concise.branches == ("cond",)
    assert concise.options == {"value": 2.0}
    assert cautious.schedule["kind"] == "piecewise" and not cautious.enabled
    assert cautious.positions == {"kind": "all"}
    r0, r1 = s.rules
    assert (r0.action, r0.target, r0.above, r0.for_steps, r0.steps) == ("apply", "cautious", 0.5, 2, 20)
    assert (r1.action, r1.target, r1.for_steps, r1.steps) == ("stop", "friendly", 1, None)
    assert s.concepts["concise"]["voice"].weight == 0.8
    assert s.concepts["concise"]["text"].weight == 1.0


def test_yaml_round_trip(tmp_path):
    s = _style()
    path = tmp_path / "styles" / "fc.yaml"
    s.save(path)
    loaded = Style.load(path)
    assert loaded.name == s.name and loaded.description == s.description
    assert loaded.components == s.components
    assert loaded.rules == s.rules
    assert loaded.concepts == s.concepts
    assert loaded.to_dict() == s.to_dict()
    assert loaded.base_dir == path.parent
    # and the file is plain YAML a person can read
    assert yaml.safe_load(path.read_text())["components"][0]["feature"] == "friendly"


def test_save_leaves_no_temp_files(tmp_path):
    _style().save(tmp_path / "s.yaml")
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]


def test_load_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError):
        Style.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("components: [\n  - {feature: 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Style.load(bad)


def test_load_error_names_the_file_and_key_path(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(_data(c1={"wieght": 1.0})))
    with pytest.raises(ConfigError) as info:
        Style.load(path)
    msg = str(info.value)
    assert str(path) in msg and "components[1].wieght" in msg


# -- validation ----------------------------------------------------------------------------------
def test_unknown_component_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"components\[1\]\.wieght: unknown key") as info:
        Style.from_dict(_data(c1={"wieght": 1.0}))
    assert "weight" in str(info.value) and "intervention" in str(info.value)


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="componets: unknown key"):
        Style.from_dict({"componets": []})


def test_rule_applying_an_unknown_component():
    data = copy.deepcopy(FULL)
    data["rules"][0]["then"]["apply"] = "cautios"
    with pytest.raises(ConfigError, match=r"rules\[0\]\.then\.apply: no component named 'cautios'") as info:
        Style.from_dict(data)
    assert "cautious" in str(info.value)


@pytest.mark.parametrize(("field", "value", "path"), [
    ("for_steps", 0, r"rules\[0\]\.when\.for_steps"),
    ("above", "high", r"rules\[0\]\.when\.above"),
    ("above", math.nan, r"rules\[0\]\.when\.above"),
    ("speling", 1, r"rules\[0\]\.when\.speling"),
])
def test_bad_rule_when(field, value, path):
    data = copy.deepcopy(FULL)
    data["rules"][0]["when"][field] = value
    with pytest.raises(ConfigError, match=path):
        Style.from_dict(data)


def test_rule_needs_exactly_one_action_and_valid_steps():
    data = copy.deepcopy(FULL)
    data["rules"][0]["then"] = {"apply": "cautious", "stop": "friendly"}
    with pytest.raises(ConfigError, match=r"rules\[0\]\.then: give exactly one"):
        Style.from_dict(data)
    data["rules"][0]["then"] = {"apply": "cautious", "steps": 0}
    with pytest.raises(ConfigError, match=r"rules\[0\]\.then\.steps"):
        Style.from_dict(data)
    data["rules"][0]["when"].pop("above")
    with pytest.raises(ConfigError, match=r"rules\[0\]\.when\.above: missing"):
        Style.from_dict(data)


@pytest.mark.parametrize("weight", [math.nan, math.inf, "0.5", True, None, [1]])
def test_component_weight_must_be_a_finite_number(weight):
    with pytest.raises(ConfigError, match=r"components\[0\]\.weight"):
        Style.from_dict(_data(c0={"weight": weight}))


def test_missing_feature_names_the_component():
    data = copy.deepcopy(FULL)
    del data["components"][2]["feature"]
    with pytest.raises(ConfigError, match=r"components\[2\].*'feature'"):
        Style.from_dict(data)


def test_concept_and_feature_together_or_undefined_concept():
    with pytest.raises(ConfigError, match=r"components\[1\].*not both"):
        Style.from_dict(_data(c1={"feature": "x"}))
    with pytest.raises(ConfigError, match=r"components\[1\]\.concept: 'brief' is not defined"):
        Style.from_dict(_data(c1={"concept": "brief"}))


@pytest.mark.parametrize(("fields", "path"), [
    ({"enabled": "no"}, r"components\[0\]\.enabled"),
    ({"branches": [1]}, r"components\[0\]\.branches"),
    ({"options": [1]}, r"components\[0\]\.options"),
    ({"schedule": {"end": 0.3}}, r"components\[0\]\.schedule"),
    ({"positions": 5}, r"components\[0\]\.positions"),
    ({"intervention": 3}, r"components\[0\]\.intervention"),
])
def test_bad_component_fields_name_their_path(fields, path):
    with pytest.raises(ConfigError, match=path):
        Style.from_dict(_data(c0=fields))


def test_concept_realisation_keys_are_checked():
    data = copy.deepcopy(FULL)
    data["concepts"]["concise"]["text"]["feture"] = "short"
    with pytest.raises(ConfigError, match=r"concepts\.concise\.text\.feture"):
        Style.from_dict(data)


def test_duplicate_component_names_error():
    data = copy.deepcopy(FULL)
    data["components"][2]["name"] = "friendly"
    with pytest.raises(ConfigError, match="unique"):
        Style.from_dict(data)


# -- algebra -------------------------------------------------------------------------------------
def _weights(style: Style) -> dict[str, float]:
    return {c.name: c.weight for c in style.components}


def _simple(name: str, *components: tuple[str, str, float]) -> Style:
    return Style.from_dict({"name": name, "components": [
        {"dictionary": d, "feature": f, "weight": w} for d, f, w in components]})


def test_add_merges_identical_components_and_keeps_distinct_ones():
    a = _simple("a", ("dicts/mood", "happy", 0.5), ("dicts/mood", "calm", 0.25))
    b = _simple("b", ("dicts/mood", "happy", 0.25), ("dicts/mood", "formal", 1.0))
    s = a + b
    assert _weights(s) == {"happy": 0.75, "calm": 0.25, "formal": 1.0}
    assert s.name == "a+b"
    # the operands are unchanged
    assert _weights(a) == {"happy": 0.5, "calm": 0.25}
    assert _weights(b) == {"happy": 0.25, "formal": 1.0}


def test_add_does_not_merge_components_that_differ_in_schedule_or_intervention():
    a = _simple("a", ("dicts/mood", "happy", 0.5))
    b = copy.deepcopy(a)
    b.components[0].intervention = "clamp"
    assert len((a + b).components) == 2
    c = copy.deepcopy(a)
    c.components[0].schedule = {"kind": "window", "end": 0.5}
    assert len((a + c).components) == 2


def test_add_keeps_rules_and_concepts():
    s = _style() + _simple("extra", ("dicts/x", "y", 1.0))
    assert len(s.rules) == 2 and "concise" in s.concepts


def test_sum_of_styles_with_clashing_names_stays_a_valid_style(tmp_path):
    """Two distinct components that happen to share a name must not make an unloadable style."""
    a = _simple("a", ("dicts/mood", "happy", 0.5))
    b = _simple("b", ("dicts/other", "happy", 1.0))
    s = a + b
    assert len(s.components) == 2
    names = [c.name for c in s.components]
    assert len(set(names)) == len(names), f"component names must stay unique, got {names}"
    s.save(tmp_path / "sum.yaml")
    assert len(Style.load(tmp_path / "sum.yaml").components) == 2


def test_scale():
    s = _style()
    half = 0.5 * s
    assert _weights(half) == {"friendly": 0.35, "concise": 0.25, "cautious": 0.5}
    assert _weights(s * 2) == {"friendly": 1.4, "concise": 1.0, "cautious": 2.0}
    assert _weights(s) == {"friendly": 0.7, "concise": 0.5, "cautious": 1.0}
    assert half.rules == s.rules
    with pytest.raises(ConfigError):
        s.scaled(math.nan)


def test_blend_endpoints_equal_the_styles():
    a = _simple("a", ("dicts/mood", "happy", 0.8), ("dicts/mood", "calm", 0.4))
    b = _simple("b", ("dicts/mood", "happy", 0.2), ("dicts/mood", "formal", 1.0))

    def effective(style):
        return {k: v for k, v in _weights(style).items() if v != 0}

    assert effective(blend(a, b, 0.0)) == _weights(a)
    assert effective(blend(a, b, 1.0)) == _weights(b)
    mid = _weights(blend(a, b, 0.25))
    assert mid == pytest.approx({"happy": 0.65, "calm": 0.3, "formal": 0.25})
    with pytest.raises(ConfigError, match="blend t"):
        blend(a, b, math.nan)


def test_saving_a_style_holding_a_loaded_dictionary_errors(tmp_path):
    d = DirectionSet(torch.ones(1, 4), DictionaryInfo(model=None, site="s", site_norm=1.0), ["x"])
    s = Style(name="mem", components=[Component(name="x", dictionary=d, feature="x")])
    with pytest.raises(ConfigError, match="save the dictionary to a folder"):
        s.save(tmp_path / "mem.yaml")
    assert not (tmp_path / "mem.yaml").exists()
    assert list(tmp_path.iterdir()) == []


def test_classifier_rule_parses_round_trips_and_rejects_mixed_keys(tmp_path):
    data = copy.deepcopy(FULL)
    data["rules"][0]["when"] = {"classifier": "smollm2-sms-spam", "above": 0.9}
    s = Style.from_dict(data)
    rule = s.rules[0]
    assert (rule.classifier, rule.dictionary, rule.feature, rule.above) == ("smollm2-sms-spam", None,
                                                                           None, 0.9)
    s.save(tmp_path / "s.yaml")
    assert Style.load(tmp_path / "s.yaml").rules == s.rules
    data["rules"][0]["when"]["feature"] = "scam"
    with pytest.raises(ConfigError, match=r"rules\[0\]\.when\.feature: unknown key\..* Allowed keys are "
                                          r"classifier, above, for_steps"):
        Style.from_dict(data)
