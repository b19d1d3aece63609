"""Rules and classifier read-outs leave out the padding of left-padded batched generation."""

from __future__ import annotations

import pytest
import torch

from polysteer.features.classifier import StreamingScore
from polysteer.features.concepts import direction_set
from polysteer.plugins.text.classify import fit_text_classifier
from polysteer.plugins.text.testing import tiny_text_adapter
from polysteer.steering.runtime import steer
from polysteer.steering.style import Component, Rule, Style

SITE = "blocks.1.resid_post"
SHORT, LONG = "a dog", "the happy cat sat on the mat by the sea"


@pytest.fixture
def adapter(plugin_manager):
    torch.manual_seed(0)
    adapter = tiny_text_adapter()
    # the tiny model's pad embedding is zero; in real models pad positions carry activations
    with torch.no_grad():
        table = adapter.model.get_input_embeddings().weight
        table[adapter.tokenizer.pad_token_id] = table[5].roll(1)
    return adapter


def _prefill(adapter, prompts):
    with steer(adapter, None, capture=[SITE]) as run:
        adapter.generate(prompts, chat=False, max_new_tokens=1)
    return run.captured(SITE)


def test_a_feature_rule_does_not_fire_on_padding(adapter):
    batch = _prefill(adapter, [LONG, SHORT])
    pads = int(adapter.encode([LONG, SHORT], chat=False)["attention_mask"][1].eq(0).sum())
    assert pads > 0
    pad_vector = batch[1, 0]  # what a pad position of the short row looks like at the site
    d = direction_set([pad_vector], ["pad-like"], site=SITE, site_norm=float(pad_vector.norm()),
                      model=adapter.model_fingerprint, method="test")
    real = d.encode(batch[1, pads:])[..., 0].max() / d.scales[0]
    on_pads = d.encode(batch[1, :pads])[..., 0].max() / d.scales[0]
    assert on_pads > real  # without the padding mask the short row would fire on its pads
    threshold = float((real + on_pads) / 2)
    style = Style("react", [Component("boost", dictionary=d, feature="pad-like", weight=1.0, enabled=False)],
                  [Rule(d, "pad-like", above=threshold, action="apply", target="boost")])
    with steer(adapter, style, 1.0) as run:
        adapter.generate([LONG, SHORT], chat=False, max_new_tokens=2)
    assert all(1 not in e["rows"] for e in run.rule_events() if e["step"] == 0), run.rule_events()
    with steer(adapter, style, 1.0) as run:
        adapter.generate([SHORT], chat=False, max_new_tokens=2)
    assert not [e for e in run.rule_events() if e["step"] == 0]  # alone, the short prompt does not fire


def test_streaming_score_leaves_out_masked_positions(adapter):
    good = ["the happy cat", "a happy dog", "happy happy day", "good food", "very good friend", "good day"]
    bad = ["the sad cat", "a sad dog", "sad sad night", "bad food", "very bad day", "bad night"]
    clf = fit_text_classifier(adapter, None, (good + bad) * 2, (["good"] * 6 + ["bad"] * 6) * 2,
                              positive="good", site=SITE, folds=2)
    x = _prefill(adapter, [LONG, SHORT])
    pads = int(adapter.encode([LONG, SHORT], chat=False)["attention_mask"][1].eq(0).sum())
    real = torch.ones(x.shape[:2], dtype=torch.bool)
    real[1, :pads] = False
    masked = StreamingScore(clf).update(x, real)
    alone = StreamingScore(clf).update(x[1:, pads:])
    assert torch.allclose(masked[1], alone[0], atol=1e-6)
    assert not torch.allclose(StreamingScore(clf).update(x)[1], alone[0], atol=1e-6)


def _events_for(run, row):
    return sorted(e["step"] for e in run.rule_events() if row in e["rows"])


def test_a_rule_fires_at_the_same_steps_alone_and_left_padded_in_a_batch(adapter):
    """The short prompt's rule events are the same alone and as the padded row of a batch, for
    thresholds between its own read-outs and above them (where only padding would fire)."""
    batch = _prefill(adapter, [LONG, SHORT])
    pads = int(adapter.encode([LONG, SHORT], chat=False)["attention_mask"][1].eq(0).sum())
    pad_vector = batch[1, 0]
    d = direction_set([pad_vector], ["pad-like"], site=SITE, site_norm=float(pad_vector.norm()),
                      model=adapter.model_fingerprint, method="test")
    with steer(adapter, None, capture=[SITE]) as run:
        adapter.generate([SHORT], chat=False, max_new_tokens=6)
    readouts = (d.encode(run.captured(SITE)[0, 1:])[..., 0] / d.scales[0]).sort().values
    gaps = readouts[1:] - readouts[:-1]
    # thresholds well away from every read-out (batched matmuls differ from single ones in the last
    # bits), and one above them all, where the prompt alone never fires but its pads would
    thresholds = ((readouts[:-1] + readouts[1:]) / 2)[gaps > 1e-3].tolist() + [float(readouts[-1]) + 0.1]
    fired_somewhere = 0
    for threshold in thresholds:
        style = Style("react", [Component("boost", dictionary=d, feature="pad-like", weight=0.0,
                                          enabled=False)],
                      [Rule(d, "pad-like", above=threshold, action="apply", target="boost")])
        with steer(adapter, style, 1.0) as alone:
            adapter.generate([SHORT], chat=False, max_new_tokens=6)
        fired, steps = _events_for(alone, 0), len(alone.clock.generations[-1])
        with steer(adapter, style, 1.0) as batched:
            adapter.generate([LONG, SHORT], chat=False, max_new_tokens=6)
        # alone, the prompt may stop at its end-of-sequence token; in the batch its row runs on
        assert [s for s in _events_for(batched, 1) if s < steps] == fired, threshold
        fired_somewhere += 0 < len(fired) < steps
    assert fired_somewhere >= 2
    assert pads > 0
