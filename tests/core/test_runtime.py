"""The steering runtime on the pure-torch reference model.

Most checks measure the intervention directly: an outer capture-only context installs its hook
first, so it records the activation *before* the steering context's hook changes it, while the
steering context's own capture records it *after*. Their difference is exactly what steering did
at every position of every step.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from polysteer.errors import DictionaryMismatchError, PolysteerError, SteeringError
from polysteer.features.classifier import LinearFit, from_fit
from polysteer.features.concepts import direction_set, median_norm
from polysteer.models.reference import ReferenceAdapter, ReferenceConfig, ReferenceLM, reference_prompts
from polysteer.steering.runtime import SteeringWarning, steer
from polysteer.steering.style import Component, Realisation, Rule, Style
from polysteer.testing.conformance import count_hooks

SITE = "blocks.0.resid_post"
PROMPT = 6
ATOL = 1e-5


def _vectors(n: int = 2, seed: int = 0) -> list[torch.Tensor]:
    return list(torch.randn(n, 32, generator=torch.Generator().manual_seed(seed)))


def _dirs(adapter: ReferenceAdapter, prompts: torch.Tensor, site: str = SITE, seed: int = 0):
    with steer(adapter, None, capture=[site]) as run:
        adapter.generate(prompts, max_new_tokens=4)
    norm = median_norm(run.captured(site))
    return direction_set(_vectors(2, seed), ["alpha", "beta"], site=site, site_norm=norm,
                         model=adapter.model_fingerprint, method="test")


def _style(*components: Component, rules: tuple[Rule, ...] = (), name: str = "test") -> Style:
    return Style(name=name, components=list(components), rules=list(rules))


def _comp(dictionary, feature="alpha", name=None, **fields) -> Component:
    return Component(name=name or str(feature), dictionary=dictionary, feature=feature, **fields)


def _vec(d, feature: str = "alpha") -> torch.Tensor:
    """What ``add`` at w = 1 adds: one site norm along the unit direction."""
    return d.directions[d.feature_index(feature)] * d.info.site_norm


def _measure(adapter, style, intensity, fn, site: str = SITE):
    """(before, after, run): activations at ``site`` before and after the style's hook."""
    with steer(adapter, None, capture=[site]) as before, \
            steer(adapter, style, intensity, capture=[site]) as after:
        fn()
    return before, after


@pytest.fixture
def adapter(plugin_manager):
    return ReferenceAdapter()


@pytest.fixture
def prompts():
    return reference_prompts(samples=2, length=PROMPT)


@pytest.fixture
def dirs(adapter, prompts):
    return _dirs(adapter, prompts)


# -- identity and exact effect ---------------------------------------------------------------------
def test_zero_intensity_is_bit_identical(adapter, prompts, dirs):
    style = _style(_comp(dirs, weight=3.0), _comp(dirs, "beta", intervention="ablate"))
    plain_tokens = adapter.generate(prompts, max_new_tokens=6).outputs
    plain_logits = adapter.logits(prompts)
    with steer(adapter, style, 0.0, capture=[SITE, "blocks.1.resid_post"]) as run:
        tokens = adapter.generate(prompts, max_new_tokens=6).outputs
        logits = adapter.logits(prompts)
    with steer(adapter, None, capture=["blocks.1.resid_post"]) as plain:
        adapter.logits(prompts)
    assert torch.equal(tokens, plain_tokens)
    assert torch.equal(logits, plain_logits)
    assert torch.equal(run.captured("blocks.1.resid_post"), plain.captured("blocks.1.resid_post"))
    # per-sample intensities of zero are exact too
    with steer(adapter, style, [0.0, 0.0]):
        assert torch.equal(adapter.logits(prompts), plain_logits)
        assert torch.equal(adapter.generate(prompts, max_new_tokens=6).outputs, plain_tokens)


def test_add_moves_the_site_by_intensity_weight_site_norm_direction(adapter, prompts, dirs):
    style = _style(_comp(dirs, weight=2.0))
    sites = ["blocks.0.resid_pre", SITE, "blocks.1.resid_post"]
    with steer(adapter, None, capture=sites) as plain:
        plain_logits = adapter.logits(prompts)
    with steer(adapter, style, 0.75, capture=sites) as run:
        logits = adapter.logits(prompts)
    x, y = plain.captured(SITE), run.captured(SITE)
    assert x.shape == (2, PROMPT, 32)
    expected = (0.75 * 2.0 * _vec(dirs)).expand_as(x)
    assert torch.allclose(y - x, expected, atol=ATOL)
    # upstream of the site nothing changes; downstream and the logits do
    assert torch.equal(run.captured("blocks.0.resid_pre"), plain.captured("blocks.0.resid_pre"))
    assert not torch.allclose(run.captured("blocks.1.resid_post"), plain.captured("blocks.1.resid_post"))
    assert not torch.allclose(logits, plain_logits)


def test_intensity_one_is_one_site_norm(adapter, prompts, dirs):
    before, after = _measure(adapter, _style(_comp(dirs)), 1.0, lambda: adapter.logits(prompts))
    moved = (after.captured(SITE) - before.captured(SITE)).norm(dim=-1)
    assert torch.allclose(moved, torch.full_like(moved, dirs.info.site_norm), rtol=1e-4)


def test_every_decode_step_is_steered_under_a_kv_cache(adapter, prompts, dirs):
    before, after = _measure(adapter, _style(_comp(dirs)), 1.5,
                             lambda: adapter.generate(prompts, max_new_tokens=5).outputs)
    assert [s.new for s in after.clock.history] == [PROMPT, 1, 1, 1, 1]
    delta = after.captured(SITE) - before.captured(SITE)
    assert delta.shape == (2, PROMPT + 4, 32)
    assert torch.allclose(delta, (1.5 * _vec(dirs)).expand_as(delta), atol=ATOL)


def test_positions_generated_leaves_the_prompt_alone_and_steers_decode_steps(adapter, prompts, dirs):
    style = _style(_comp(dirs, positions={"kind": "generated"}))
    with steer(adapter, None, capture=[SITE]) as plain:
        adapter.generate(prompts, max_new_tokens=5)
    before, after = _measure(adapter, style, 2.0, lambda: adapter.generate(prompts, max_new_tokens=5).outputs)
    x, y = before.captured(SITE), after.captured(SITE)
    # the prefill is untouched, bit for bit, and identical to an unsteered run
    assert torch.equal(y[:, :PROMPT], x[:, :PROMPT])
    assert torch.equal(y[:, :PROMPT], plain.captured(SITE)[:, :PROMPT])
    # every decode step is steered by exactly 2 site norms
    delta = y[:, PROMPT:] - x[:, PROMPT:]
    assert delta.shape == (2, 4, 32)
    assert torch.allclose(delta, (2.0 * _vec(dirs)).expand_as(delta), atol=ATOL)
    # the first decode step sees the same token and cache as the plain run: only steering differs
    assert torch.allclose(y[:, PROMPT] - plain.captured(SITE)[:, PROMPT],
                          (2.0 * _vec(dirs)).expand(2, 32), atol=ATOL)


def test_positions_prompt_steers_only_the_prefill(adapter, prompts, dirs):
    style = _style(_comp(dirs, positions={"kind": "prompt"}))
    before, after = _measure(adapter, style, 1.0, lambda: adapter.generate(prompts, max_new_tokens=5).outputs)
    x, y = before.captured(SITE), after.captured(SITE)
    assert torch.allclose(y[:, :PROMPT] - x[:, :PROMPT], _vec(dirs).expand(2, PROMPT, 32), atol=ATOL)
    assert torch.equal(y[:, PROMPT:], x[:, PROMPT:])


def test_window_schedule_steers_only_its_steps(adapter, prompts, dirs):
    # 5 passes: progress 0, .25, .5, .75, 1 -> a window up to 0.3 covers the prefill and step 1
    style = _style(_comp(dirs, schedule={"kind": "window", "start": 0.0, "end": 0.3}))
    before, after = _measure(adapter, style, 1.0, lambda: adapter.generate(prompts, max_new_tokens=5).outputs)
    assert [s.progress for s in after.clock.history] == [0.0, 0.25, 0.5, 0.75, 1.0]
    x, y = before.captured(SITE), after.captured(SITE)
    steered = PROMPT + 1  # prompt positions (step 0) and the first generated position (step 1)
    assert torch.allclose(y[:, :steered] - x[:, :steered], _vec(dirs).expand(2, steered, 32), atol=ATOL)
    assert torch.equal(y[:, steered:], x[:, steered:])


def test_ramp_schedule_scales_each_step(adapter, prompts, dirs):
    style = _style(_comp(dirs, schedule={"kind": "ramp"}))
    before, after = _measure(adapter, style, 1.0, lambda: adapter.generate(prompts, max_new_tokens=5).outputs)
    delta = after.captured(SITE) - before.captured(SITE)
    coef = delta[0] @ dirs.directions[0] / dirs.info.site_norm  # (positions,)
    expected = torch.tensor([0.0] * PROMPT + [0.25, 0.5, 0.75, 1.0])
    assert torch.allclose(coef, expected, atol=1e-4)


def test_per_sample_intensity_steers_only_that_sample(adapter, prompts, dirs):
    style = _style(_comp(dirs))
    plain = adapter.generate(prompts, max_new_tokens=6).outputs
    before, after = _measure(adapter, style, [0.0, 1.0],
                             lambda: adapter.generate(prompts, max_new_tokens=6).outputs)
    x, y = before.captured(SITE), after.captured(SITE)
    assert torch.equal(y[0], x[0])
    assert torch.allclose(y[1] - x[1], _vec(dirs).expand_as(x[1]), atol=ATOL)
    with steer(adapter, style, [0.0, 4.0]):
        steered = adapter.generate(prompts, max_new_tokens=6).outputs
    assert torch.equal(steered[0], plain[0])
    assert not torch.equal(steered[1], plain[1])


def test_too_few_per_sample_intensities_is_an_error(adapter, prompts, dirs):
    with pytest.raises(SteeringError, match="one per sample"), steer(adapter, _style(_comp(dirs)), [1.0]):
        adapter.logits(prompts)


def test_a_list_of_style_intensity_pairs_applies_both(adapter, prompts, dirs):
    a = _style(_comp(dirs, "alpha"), name="a")
    b = _style(_comp(dirs, "beta", weight=0.5), name="b")
    before, after = _measure(adapter, [(a, 0.5), (b, 2.0)], None,
                             lambda: adapter.generate(prompts, max_new_tokens=4).outputs)
    delta = after.captured(SITE) - before.captured(SITE)
    expected = 0.5 * _vec(dirs, "alpha") + 1.0 * _vec(dirs, "beta")
    assert torch.allclose(delta, expected.expand_as(delta), atol=ATOL)
    assert after.applied == ["alpha", "beta"]


def test_pairs_with_per_sample_intensities(adapter, prompts, dirs):
    a = _style(_comp(dirs, "alpha"), name="a")
    b = _style(_comp(dirs, "beta"), name="b")
    before, after = _measure(adapter, [(a, [1.0, 0.0]), (b, [0.0, 1.0])], None,
                             lambda: adapter.logits(prompts))
    delta = after.captured(SITE) - before.captured(SITE)
    assert torch.allclose(delta[0], _vec(dirs, "alpha").expand(PROMPT, 32), atol=ATOL)
    assert torch.allclose(delta[1], _vec(dirs, "beta").expand(PROMPT, 32), atol=ATOL)


@pytest.mark.parametrize("positions", ["all", "generated"])
def test_kv_cache_and_no_cache_generate_the_same_steered_tokens(adapter, prompts, dirs, positions):
    style = _style(_comp(dirs, positions={"kind": positions}))
    plain = adapter.generate(prompts, max_new_tokens=8).outputs
    with steer(adapter, style, 2.0):
        cached = adapter.generate(prompts, max_new_tokens=8).outputs
        uncached = adapter.generate(prompts, max_new_tokens=8, use_cache=False).outputs
    assert not torch.equal(cached, plain), "the test needs an intensity that changes the output"
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("intensity", [1.0, [1.0, 1.0]])
@pytest.mark.parametrize("branches", [None, ("cond",)])
def test_a_disabled_component_without_rules_stays_off(adapter, prompts, dirs, intensity, branches):
    style = _style(_comp(dirs, enabled=False, branches=branches), _comp(dirs, "beta"))
    before, after = _measure(adapter, style, intensity, lambda: adapter.logits(prompts))
    delta = after.captured(SITE) - before.captured(SITE)
    assert torch.allclose(delta, _vec(dirs, "beta").expand_as(delta), atol=ATOL)


# -- rules ----------------------------------------------------------------------------------------
TRIGGER = 8  # the absolute position whose pass fires the rule: step TRIGGER - PROMPT + 1 = 3


@pytest.fixture
def position_adapter(plugin_manager):
    """A reference model with all-zero token embeddings: ``blocks.0.resid_pre`` is the position
    embedding alone, so a rule reading it fires at a known step whatever tokens steering makes."""
    model = ReferenceLM()
    with torch.no_grad():
        model.embed.weight.zero_()
    return ReferenceAdapter(model)


@pytest.fixture
def trigger(position_adapter):
    """A dictionary at ``blocks.0.resid_pre`` whose feature reads 1.0 at position TRIGGER only."""
    pos = position_adapter.model.pos.weight.detach()
    d = direction_set([pos[TRIGGER]], ["trigger"], site="blocks.0.resid_pre",
                      site_norm=float(pos.norm(dim=1).median()),
                      model=position_adapter.model_fingerprint, method="test")
    readout = pos[:20] @ d.directions[0] / d.scales[0]
    assert readout[TRIGGER] == pytest.approx(1.0)
    others = torch.cat([readout[:TRIGGER], readout[TRIGGER + 1:]])
    assert others.max() < 0.7, "precondition: only the trigger position reads above 0.8"
    return d


def _rule(trigger, action: str, target: str, steps: int | None, **kw) -> Rule:
    return Rule(dictionary=trigger, feature="trigger", above=0.8, action=action, target=target,
                steps=steps, name=kw.pop("name", "alarm"), **kw)


def _delta_coef(before, after, d, generation: int = -1) -> torch.Tensor:
    """Per (row, position): how many site norms of ``alpha`` steering added."""
    delta = after.captured(SITE, generation) - before.captured(SITE, generation)
    return delta @ d.directions[0] / d.info.site_norm


def test_apply_rule_switches_a_disabled_component_on_for_n_steps(position_adapter, prompts, trigger):
    a = position_adapter
    d = _dirs(a, prompts)
    style = _style(_comp(d, name="C", enabled=False), rules=(_rule(trigger, "apply", "C", 2),))
    before, after = _measure(a, style, 1.0, lambda: a.generate(prompts, max_new_tokens=8).outputs)
    assert after.rule_events() == [{"rule": "alarm", "step": 3, "rows": [0, 1]}]
    coef = _delta_coef(before, after, d)
    # the rule fires while position 8 is processed (step 3) and acts on steps 4 and 5:
    # positions 9 and 10 under the cache, and nowhere else
    expected = torch.zeros(2, PROMPT + 7)
    expected[:, 9:11] = 1.0
    assert torch.allclose(coef, expected, atol=1e-4)
    delta = after.captured(SITE) - before.captured(SITE)
    assert (delta[:, :9] == 0).all() and (delta[:, 11:] == 0).all()


def test_apply_rule_without_a_cache(position_adapter, prompts, trigger):
    a = position_adapter
    d = _dirs(a, prompts)
    style = _style(_comp(d, name="C", enabled=False), rules=(_rule(trigger, "apply", "C", 2),))
    with steer(a, None, capture=[SITE]) as before, steer(a, style, 1.0, capture=[SITE]) as after:
        a.generate(prompts, max_new_tokens=8, use_cache=False)
    assert after.rule_events() == [{"rule": "alarm", "step": 3, "rows": [0, 1]}]
    # without a cache every pass sees the whole sequence; captures keep each pass's new position,
    # so position 5 + k is what step k computed: steps 4 and 5 are steered, no others
    assert [s.new for s in after.clock.history] == [PROMPT] + [1] * 7
    coef = _delta_coef(before, after, d)
    expected = torch.zeros(2, PROMPT + 7)
    expected[:, 9:11] = 1.0
    assert torch.allclose(coef, expected, atol=1e-4)


def test_rule_needing_two_steps_above_does_not_fire_on_one(position_adapter, prompts, trigger):
    a = position_adapter
    d = _dirs(a, prompts)
    style = _style(_comp(d, name="C", enabled=False),
                   rules=(_rule(trigger, "apply", "C", 2, for_steps=2),))
    before, after = _measure(a, style, 1.0, lambda: a.generate(prompts, max_new_tokens=8).outputs)
    assert after.rule_events() == []
    assert torch.equal(after.captured(SITE), before.captured(SITE))


def test_stop_rule_switches_a_component_off(position_adapter, prompts, trigger):
    a = position_adapter
    d = _dirs(a, prompts)
    style = _style(_comp(d, name="D"), rules=(_rule(trigger, "stop", "D", None),))
    before, after = _measure(a, style, 1.0, lambda: a.generate(prompts, max_new_tokens=8).outputs)
    coef = _delta_coef(before, after, d)
    expected = torch.zeros(2, PROMPT + 7)
    expected[:, :9] = 1.0  # steps 0..3 cover positions 0..8; stopped from step 4 on, for good
    assert torch.allclose(coef, expected, atol=1e-4)


def test_stop_rule_for_n_steps_then_resumes(position_adapter, prompts, trigger):
    a = position_adapter
    d = _dirs(a, prompts)
    style = _style(_comp(d, name="D"), rules=(_rule(trigger, "stop", "D", 2),))
    before, after = _measure(a, style, 1.0, lambda: a.generate(prompts, max_new_tokens=8).outputs)
    coef = _delta_coef(before, after, d)
    expected = torch.ones(2, PROMPT + 7)
    expected[:, 9:11] = 0.0
    assert torch.allclose(coef, expected, atol=1e-4)


def test_rules_reset_between_generations(position_adapter, prompts, trigger):
    a = position_adapter
    d = _dirs(a, prompts)
    # apply for good once fired: if the state leaked, the second generation would start steered
    style = _style(_comp(d, name="C", enabled=False), rules=(_rule(trigger, "apply", "C", None),))
    with steer(a, None, capture=[SITE]) as before, steer(a, style, 1.0, capture=[SITE]) as after:
        a.generate(prompts, max_new_tokens=8)
        a.generate(prompts, max_new_tokens=8)
    expected = torch.zeros(2, PROMPT + 7)
    expected[:, 9:] = 1.0
    for generation in (0, 1):
        coef = _delta_coef(before, after, d, generation)
        assert torch.allclose(coef, expected, atol=1e-4), f"generation {generation}"
    assert [e["step"] for e in after.rule_events()] == [3, 3]


def _trigger_classifier(trigger, pool: str = "max"):
    """A classifier over the trigger feature: P > 0.5 once its pooled read-out exceeds 0.8."""
    scale = float(trigger.scales[0])
    fit = LinearFit(torch.tensor([10.0 / scale]), -8.0, torch.zeros(1), torch.ones(1), "l1", 0.0)
    return from_fit(fit, name="alarm-classifier", classes=("calm", "alarm"), site=trigger.info.site,
                    site_norm=trigger.info.site_norm, channels=32, model=trigger.info.model,
                    dictionary=trigger, dictionary_ref=None, pools=(pool,))


def test_classifier_rule_fires_when_the_score_over_the_generation_crosses(position_adapter, prompts,
                                                                          trigger):
    a = position_adapter
    d = _dirs(a, prompts)
    rule = Rule(dictionary=None, feature=None, above=0.5, action="apply", target="C", steps=2,
                name="classified", classifier=_trigger_classifier(trigger))
    style = _style(_comp(d, name="C", enabled=False), rules=(rule,))
    before, after = _measure(a, style, 1.0, lambda: a.generate(prompts, max_new_tokens=8).outputs)
    # the running max passes 0.8 at position 8 (step 3) and stays there: the rule keeps firing,
    # so C acts from step 4 (position 9) to the end; nothing before
    events = after.rule_events()
    assert [e["step"] for e in events] == [3, 4, 5, 6, 7] and events[0]["rows"] == [0, 1]
    expected = torch.zeros(2, PROMPT + 7)
    expected[:, 9:] = 1.0
    assert torch.allclose(_delta_coef(before, after, d), expected, atol=1e-4)


def test_a_mean_pooled_classifier_that_never_crosses_leaves_outputs_identical(position_adapter, prompts,
                                                                              trigger):
    a = position_adapter
    d = _dirs(a, prompts)
    rule = Rule(dictionary=None, feature=None, above=0.5, action="apply", target="C",
                classifier=_trigger_classifier(trigger, pool="mean"))
    style = _style(_comp(d, name="C", enabled=False), rules=(rule,))
    before, after = _measure(a, style, 1.0, lambda: a.generate(prompts, max_new_tokens=8).outputs)
    assert after.rule_events() == []
    assert torch.equal(after.captured(SITE), before.captured(SITE))


def test_rule_gate_combines_with_per_sample_intensity(position_adapter, trigger):
    """A rule switches a component on; a per-sample intensity of 0 still keeps its row untouched."""
    a = position_adapter
    prompts = reference_prompts(samples=2, length=PROMPT)
    d = _dirs(a, prompts)
    style = _style(_comp(d, name="C", enabled=False), rules=(_rule(trigger, "apply", "C", 1),))
    before, after = _measure(a, style, [1.0, 0.0], lambda: a.generate(prompts, max_new_tokens=8).outputs)
    coef = _delta_coef(before, after, d)
    expected = torch.zeros(2, PROMPT + 7)
    expected[0, 9] = 1.0
    assert torch.allclose(coef, expected, atol=1e-4)


def test_plain_forward_pass_with_a_rule_read_downstream_of_its_target(adapter, prompts, dirs):
    """A forward pass outside generate() is one single step, also when a rule reads a later site."""
    later = direction_set(_vectors(1, seed=5), ["r"], site="blocks.1.resid_post", site_norm=1.0,
                          model=adapter.model_fingerprint, method="test")
    rule = Rule(dictionary=later, feature="r", above=1e9, action="stop", target="C", steps=2)
    style = _style(_comp(dirs, name="C"), rules=(rule,))
    with steer(adapter, style, 1.0):
        via_clock = adapter.logits(prompts)
    with steer(adapter, style, 1.0), torch.no_grad():
        direct = adapter.model(prompts)  # no clock step announced
    assert torch.allclose(direct, via_clock, atol=ATOL)


def test_captures_of_a_plain_forward_pass(adapter, prompts):
    with steer(adapter, None, capture=[SITE]) as plain:
        adapter.logits(prompts)
    with steer(adapter, None, capture=[SITE]) as run, torch.no_grad():
        adapter.model(prompts)  # no clock step announced
    assert torch.equal(run.captured(SITE), plain.captured(SITE))


# -- contexts -------------------------------------------------------------------------------------
def test_nested_contexts_both_apply_and_both_detach(adapter, prompts, dirs):
    a = _style(_comp(dirs, "alpha"), name="a")
    b = _style(_comp(dirs, "beta"), name="b")
    hooks = count_hooks(adapter.model)
    plain = adapter.logits(prompts)
    with steer(adapter, None, capture=[SITE]) as before:
        with steer(adapter, a, 1.0):
            with steer(adapter, b, 1.0, capture=[SITE]) as after:
                adapter.logits(prompts)
                assert len(adapter.attached_clocks) == 3
            delta = after.captured(SITE) - before.captured(SITE)
            assert torch.allclose(delta, (_vec(dirs, "alpha") + _vec(dirs, "beta")).expand_as(delta),
                                  atol=ATOL)
            # after the inner context only the outer style steers
            with steer(adapter, None, capture=[SITE]) as inner_gone:
                assert not torch.equal(adapter.logits(prompts), plain)
            delta = inner_gone.captured(SITE) - before.captured(SITE)
            assert torch.allclose(delta, _vec(dirs, "alpha").expand_as(delta), atol=ATOL)
        assert count_hooks(adapter.model) == hooks + 2  # the capture-only context: site + step closer
    assert count_hooks(adapter.model) == hooks
    assert adapter.attached_clocks == ()
    assert torch.equal(adapter.logits(prompts), plain)


def test_hooks_are_removed_after_exit_and_after_an_exception(adapter, prompts, dirs):
    hooks = count_hooks(adapter.model)
    style = _style(_comp(dirs), _comp(dirs, "beta", schedule={"kind": "ramp"}))
    plain = adapter.logits(prompts)
    with steer(adapter, style, 1.0, capture=["blocks.1.mlp_out", "blocks.0.resid_pre"]):
        assert count_hooks(adapter.model) == hooks + 4  # 3 sites + the implicit-step closer
        adapter.generate(prompts, max_new_tokens=3)
    assert count_hooks(adapter.model) == hooks
    with pytest.raises(ZeroDivisionError), steer(adapter, style, 1.0):
        adapter.generate(prompts, max_new_tokens=3)
        _ = 1 / 0
    assert count_hooks(adapter.model) == hooks
    assert adapter.attached_clocks == ()
    assert torch.equal(adapter.logits(prompts), plain)


def test_reusing_a_steering_context_does_not_double_the_effect(adapter, prompts, dirs):
    run = steer(adapter, _style(_comp(dirs)), 1.0)
    with run:
        first = adapter.logits(prompts)
    try:
        with run:
            second = adapter.logits(prompts)
    except PolysteerError:
        return  # refusing to re-enter is also acceptable
    assert torch.equal(first, second)
    assert run.applied == ["alpha"]


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("intensity", [math.nan, math.inf, -math.inf, [0.5, math.nan], [math.inf, 1.0],
                                       "0.5", True])
def test_non_finite_intensity_is_a_clear_error(adapter, dirs, intensity):
    hooks = count_hooks(adapter.model)
    with pytest.raises(SteeringError, match="finite number"):
        with steer(adapter, _style(_comp(dirs)), intensity):
            pass
    assert count_hooks(adapter.model) == hooks


def test_non_finite_intensity_through_generate(adapter, prompts, dirs):
    with pytest.raises(SteeringError, match="finite"):
        adapter.generate(prompts, style=_style(_comp(dirs)), intensity=math.nan, max_new_tokens=2)
    assert adapter.attached_clocks == ()


def test_non_finite_schedule_value_is_refused(adapter, prompts, dirs):
    style = _style(_comp(dirs, schedule={"kind": "constant", "value": math.nan}))
    with pytest.raises(PolysteerError), steer(adapter, style, 1.0):
        logits = adapter.logits(prompts)
        assert torch.isfinite(logits).all(), "a NaN schedule silently produced NaN logits"


def test_unknown_feature_label_errors_on_entering(adapter, dirs):
    hooks = count_hooks(adapter.model)
    with pytest.raises(SteeringError, match="Did you mean 'alpha'"):
        with steer(adapter, _style(_comp(dirs, "alpah")), 1.0):
            pass
    assert count_hooks(adapter.model) == hooks
    assert adapter.attached_clocks == ()


def test_unknown_intervention_or_schedule_kind_errors(adapter, dirs):
    with pytest.raises(PolysteerError, match="clmap"), \
            steer(adapter, _style(_comp(dirs, intervention="clmap"))):
        pass
    with pytest.raises(PolysteerError, match="windw"), \
            steer(adapter, _style(_comp(dirs, schedule={"kind": "windw"}))):
        pass
    with pytest.raises(PolysteerError, match="nope"), \
            steer(adapter, _style(_comp(dirs, options={"nope": 1}))):
        pass
    assert count_hooks(adapter.model) == 0


def test_concept_without_a_text_realisation_is_reported(adapter, prompts, dirs):
    style = Style(name="calm", components=[
        Component(name="calm", concept="calm"),
        _comp(dirs, "beta", name="steady"),
    ], concepts={"calm": {"voice": Realisation("dictionaries/pitch", "low"),
                          "image": Realisation("dictionaries/colour", "blue")}})
    with pytest.warns(SteeringWarning, match="calm") as caught:
        before, after = _measure(adapter, style, 1.0, lambda: adapter.logits(prompts))
    assert "text" in str(caught[0].message)
    assert after.applied == ["steady"]
    assert [name for name, _ in after.not_applied] == ["calm"]
    reason = after.not_applied[0][1]
    assert "text" in reason and "image" in reason and "voice" in reason
    delta = after.captured(SITE) - before.captured(SITE)
    assert torch.allclose(delta, _vec(dirs, "beta").expand_as(delta), atol=ATOL)


def test_concept_with_a_text_realisation_applies_with_its_weight(adapter, prompts, dirs):
    style = Style(name="calm", components=[Component(name="calm", concept="calm", weight=2.0)],
                  concepts={"calm": {"text": Realisation(dirs, "beta", 0.25)}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", SteeringWarning)
        before, after = _measure(adapter, style, 1.0, lambda: adapter.logits(prompts))
    assert after.not_applied == []
    delta = after.captured(SITE) - before.captured(SITE)
    assert torch.allclose(delta, (0.5 * _vec(dirs, "beta")).expand_as(delta), atol=ATOL)


def test_dictionary_from_another_model_is_a_mismatch_on_entering(adapter, prompts):
    other = ReferenceAdapter(ReferenceLM(ReferenceConfig(seed=7)))
    foreign = _dirs(other, prompts)
    hooks = count_hooks(adapter.model)
    with pytest.raises(DictionaryMismatchError, match="rebuild"):
        with steer(adapter, _style(_comp(foreign)), 1.0):
            pass
    assert count_hooks(adapter.model) == hooks
    assert adapter.attached_clocks == ()


def test_dictionary_for_a_missing_site_is_an_error(adapter, prompts):
    d = direction_set(_vectors(1), ["x"], site="blocks.9.resid_post", site_norm=1.0,
                      model=adapter.model_fingerprint, method="test")
    with pytest.raises(PolysteerError, match="blocks.9"), steer(adapter, _style(_comp(d, "x")), 1.0):
        pass
    assert count_hooks(adapter.model) == 0


def test_dictionary_loaded_from_a_folder_by_path(adapter, prompts, dirs, tmp_path):
    dirs.save(tmp_path / "mood")
    style = Style.from_dict({"name": "s", "components": [{"dictionary": "mood", "feature": "beta"}]},
                            base_dir=tmp_path)
    before, after = _measure(adapter, style, 1.0, lambda: adapter.logits(prompts))
    delta = after.captured(SITE) - before.captured(SITE)
    assert torch.allclose(delta, _vec(dirs, "beta").expand_as(delta), atol=1e-4)


def test_a_style_file_path_resolves_dictionaries_beside_it(adapter, prompts, dirs, tmp_path):
    dirs.save(tmp_path / "dicts" / "mood")
    path = tmp_path / "calm.yaml"
    Style.from_dict({"name": "calm", "components": [
        {"dictionary": "dicts/mood", "feature": "alpha", "weight": 0.5}]}).save(path)
    before, after = _measure(adapter, path, 2.0, lambda: adapter.logits(prompts))
    delta = after.captured(SITE) - before.captured(SITE)
    assert torch.allclose(delta, _vec(dirs).expand_as(delta), atol=1e-4)


def test_a_dictionary_made_in_float32_steers_the_same_model_in_bfloat16(adapter, prompts, dirs):
    half = ReferenceAdapter(ReferenceLM().to(torch.bfloat16))
    plain = half.logits(prompts)
    with steer(half, _style(_comp(dirs)), 2.0):
        steered = half.logits(prompts)
    assert steered.dtype == torch.bfloat16
    assert not torch.equal(steered, plain)


def test_dictionaries_on_another_device_are_copied_not_moved():
    from polysteer.features.concepts import direction_set
    from polysteer.steering.runtime import on_device

    d = direction_set([torch.ones(4)], ["f"], site="blocks.0.resid_post", site_norm=1.0, model=None,
                      method="test")
    assert on_device(d, torch.device("cpu")) is d
    moved = on_device(d, torch.device("meta"))
    assert moved is not d and moved.unit.device.type == "meta"
    assert d.unit.device.type == "cpu"  # the shared object stays where it was
