"""Text concept evaluation: the held-out judge, coherence measures, and calibration on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from polysteer.features.concepts import direction_set, median_norm
from polysteer.plugins.text.evaluation import (
    TextCalibrationJudge,
    TextJudge,
    continuation_perplexities,
    evaluation_prompts,
    repetition_rate,
    text_perplexities,
)
from polysteer.plugins.text.testing import tiny_text_adapter
from polysteer.steering.runtime import steer
from polysteer.steering.style import Component, Style
from polysteer.workflows import calibrate, judge_spec, make_judge
from polysteer.workflows.calibrate import judges_dir

TEXT_CONCEPTS = ("positive", "cheerful", "gloomy", "calm", "cool", "businesslike", "formal", "french",
                 "pirate", "concise", "cautious", "golden-gate")


def test_twelve_text_concepts_with_held_out_judge_examples_and_prompts_sharing_no_text():
    prompts = evaluation_prompts("calibrate") + evaluation_prompts("evaluate")
    assert not set(evaluation_prompts("calibrate")) & set(evaluation_prompts("evaluate"))
    build_texts = set()
    for path in (judges_dir().parent / "concepts").glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        build_texts |= set(spec.get("positive", [])) | set(spec.get("negative", []))
    kinds = set()
    for name in TEXT_CONCEPTS:
        spec = judge_spec(name)
        kinds.add(spec["kind"].split()[0])
        judged = set(spec["text"]["positive"]) | set(spec["text"]["negative"])
        assert len(spec["text"]["positive"]) >= 6 and spec["text"]["instruction"]
        assert not judged & build_texts, f"{name}: a judge example is also a build example"
        assert not judged & set(prompts)
        for prompt in prompts:
            assert all(prompt not in t for t in judged | build_texts)
    assert {"sentiment", "topic", "persona", "language", "register", "length", "safety"} <= kinds


def test_the_judge_reads_held_out_text_it_never_saw():
    spec = judge_spec("pirate")["text"]
    judge = TextJudge(spec["positive"], spec["negative"])
    assert judge.probability("Arr, me hearties, the cap'n be sailin' at dawn, aye!") > 0.9
    assert judge.probability("The meeting is moved to Thursday afternoon.") < 0.5
    assert judge.probability("zzz qqq") == 0.5  # no known word: no evidence
    french = judge_spec("french")["text"]
    judge = TextJudge(french["positive"], french["negative"])
    assert judge.probability("Je voudrais un café, s'il vous plaît.") > 0.5
    assert judge.probability("I would like a coffee, please.") < 0.5


def test_repetition_rate():
    assert repetition_rate("the cat sat on the mat") == 0.0
    assert repetition_rate("a b c a b c a b c") == pytest.approx(4 / 7)
    assert repetition_rate("hi") == 0.0


@pytest.fixture
def tiny(plugin_manager):
    return tiny_text_adapter()


def _planted(adapter, token: int = 5) -> Style:
    site = "blocks.1.resid_post"
    with steer(adapter, None, capture=[site]) as run:
        adapter.generate(["hello there"], max_new_tokens=2)
    up = adapter.model.lm_head.weight[token].detach()
    d = direction_set([up], ["up"], site=site, site_norm=median_norm(run.captured(site)),
                      model=adapter.model_fingerprint, method="planted")
    return Style(name="tiny-up", components=[Component("up", dictionary=d, feature="up")])


def test_perplexities_are_those_of_the_unsteered_model(tiny):
    generation = tiny.generate(["hello there", "a b"], max_new_tokens=4)
    values = continuation_perplexities(tiny, generation)
    assert len(values) == 2 and all(math.isfinite(v) and v >= 1.0 for v in values)
    vocab = tiny.model.config.vocab_size
    assert all(v < vocab * 10 for v in text_perplexities(tiny, ["hello there friend"]))


def test_text_calibration_on_a_tiny_model(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path))
    spec = {"name": "tiny", "text": {"positive": ["hello hello"], "negative": ["a b c"],
                                     "prompts": ["hello there", "a b"], "new_tokens": 4}}
    judge = make_judge(tiny, _planted(tiny), spec)
    assert isinstance(judge, TextCalibrationJudge) and judge.inputs() == ["hello there", "a b"]
    cal = calibrate(tiny, _planted(tiny), judge=judge, grid=[0.5, 4.0, 64.0], stop_after=0,
                    progress=False)
    assert [p["intensity"] for p in cal.points] == [0.0, 0.5, 4.0, 64.0]
    for p in cal.points:
        assert 0.0 <= p["score"] <= 1.0 and 0.0 <= p["coherence"] <= 1.0 and len(p["texts"]) == 2
    assert cal.bound == pytest.approx(cal.points[0]["coherence"] + 0.2)
    assert cal.points[-1]["texts"] != cal.points[0]["texts"]  # steering changed the words
    saved = json.loads(cal.save().read_text())
    assert saved["details"]["judge"]["judge"] == "naive Bayes" and saved["high"] == cal.high


def test_the_length_judge_counts_answers_that_end(tiny):
    spec = {"name": "short", "text": {"positive": ["yes"], "negative": ["well, it depends"],
                                      "length": {"max_words": 3}, "prompts": ["hello"], "new_tokens": 3}}
    judge = TextCalibrationJudge(tiny, spec)
    generation = tiny.generate(["hello"], max_new_tokens=3)
    ended = bool(generation.row_lengths()[0] < generation.prompt_length + 3)
    assert judge.expressed(generation, ["one two"]) == [float(ended)]
    assert judge.expressed(generation, ["one two three four"]) == [0.0]
    assert torch.is_tensor(generation.outputs)
