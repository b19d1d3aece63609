"""The one harvest and the one concept builder with registered parts, on the reference model."""

from __future__ import annotations

import pytest
import torch

import polysteer as ps
from polysteer.errors import RegistryError
from polysteer.models.reference import ReferenceAdapter, reference_prompts
from polysteer.workflows.concept_builder import ConceptRecipe, build_concept, contrast_concept
from polysteer.workflows.harvesting import (
    ActivationStore,
    Rendered,
    Rows,
    collect,
    harvest,
    render_batch,
    row_selector,
    skip_first_position,
)

SITE = "blocks.1.resid_post"


class TokenRows:
    """A batch of token-id rows through the reference model (prefill only)."""

    def __init__(self, stop_early: bool = True):
        self.stop_early = stop_early

    def render(self, adapter, rendered: Rendered) -> None:
        rendered.info["seen"] = len(rendered.inputs)
        rendered.outputs = adapter.generate(torch.stack(list(rendered.inputs)), max_new_tokens=1)


class TwoPasses:
    """Runs the batch twice (as a renderer denoising at two steps would)."""

    stop_early = False

    def render(self, adapter, rendered: Rendered) -> None:
        ids = torch.stack(list(rendered.inputs))
        adapter.generate(ids, max_new_tokens=1)
        adapter.generate(ids.flip(1), max_new_tokens=1)


def last_token():
    def select(acts, rendered):
        return Rows(acts[:, -1], torch.arange(acts.shape[0]))
    return select


def last_token_id():
    def attribute(rendered, rows):
        return torch.stack(list(rendered.inputs))[:, -1][rows.example].float()
    return attribute


class Parts:
    @ps.hookimpl
    def polysteer_register_renderers(self, registry):
        registry.register("token-rows", TokenRows)

    @ps.hookimpl
    def polysteer_register_row_selectors(self, registry):
        registry.register("last-token", last_token)

    @ps.hookimpl
    def polysteer_register_attributes(self, registry):
        registry.register("last-token-id", last_token_id)


@pytest.fixture
def manager(plugin_manager):
    plugin_manager.register(Parts(), "parts")
    return plugin_manager


@pytest.fixture
def model():
    return ReferenceAdapter()


def _prompts(n: int, seed: int = 0) -> list[torch.Tensor]:
    return list(reference_prompts(samples=n, length=6, seed=seed))


def test_builtin_and_plugin_parts_are_registered(manager):
    assert {"all", "skip-first"} <= set(manager.row_selectors.names())
    assert "token-rows" in manager.renderers and "last-token-id" in manager.attributes
    assert manager.row_selectors.entry("skip-first").plugin == "core"
    with pytest.raises(RegistryError, match="skip-first"):
        row_selector("skip-frist", manager)


def test_collect_keeps_rows_in_input_order_with_their_example(manager, model):
    prompts = _prompts(5)
    got = collect(model, [prompts[:2], prompts[2:]], [SITE], renderer=TokenRows(),
                  rows=row_selector("skip-first"))
    assert got.items == 5 and got.rows[SITE].shape == (5 * 5, 32)
    assert got.example[SITE].tolist() == [i for i in range(5) for _ in range(5)]
    with ps.steer(model, None, capture=[SITE]) as run:
        model.generate(torch.stack(prompts), max_new_tokens=1)
    alone = run.captured(SITE)[:, 1:6]  # the prompt positions but the first
    for i, rows in enumerate(got.per_example(SITE)):
        torch.testing.assert_close(rows, alone[i], atol=1e-5, rtol=1e-5)
    assert got.site_norm(SITE) == pytest.approx(float(got.rows[SITE].norm(dim=-1).median()))
    assert got.outputs == [None, None], "stop_early cuts the pass short: no outputs"


def test_a_renderer_may_run_several_passes(manager, model):
    acts, rendered = render_batch(model, [SITE], TwoPasses(), _prompts(3))
    assert acts[SITE].shape[0] == 2 and acts[SITE].shape[1] == 3  # (passes, B, P, C)
    kept = row_selector("all")(acts[SITE], rendered)
    assert kept.example.tolist() == ([0] * acts[SITE].shape[2] + [1] * acts[SITE].shape[2]
                                     + [2] * acts[SITE].shape[2]) * 2


def test_harvest_with_a_renderer_stores_the_collected_rows_and_resumes(manager, model, tmp_path):
    prompts = _prompts(12)
    batches = [prompts[i:i + 3] for i in range(0, 12, 3)]
    ref = harvest(model, batches, [SITE], tmp_path / "ref", renderer=TokenRows(),
                  rows=row_selector("skip-first"), shard_tokens=8, progress=False)
    got = collect(model, batches, [SITE], renderer=TokenRows(), rows=row_selector("skip-first"))
    torch.testing.assert_close(ref.read_all(SITE), got.rows[SITE].half().float())

    class Flaky(TokenRows):
        calls = 0

        def render(self, adapter, rendered):
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise KeyboardInterrupt
            super().render(adapter, rendered)

    with pytest.raises(KeyboardInterrupt):
        harvest(model, batches, [SITE], tmp_path / "run", renderer=Flaky(),
                rows=row_selector("skip-first"), shard_tokens=8, progress=False)
    assert 0 < ActivationStore.open(tmp_path / "run").items_done < 12
    resumed = harvest(model, batches, [SITE], tmp_path / "run", renderer=TokenRows(),
                      rows=row_selector("skip-first"), shard_tokens=8, progress=False)
    assert resumed.done and resumed.model.matches(model.model_fingerprint)
    torch.testing.assert_close(resumed.read_all(SITE), ref.read_all(SITE))


def test_a_renderer_that_runs_nothing_is_a_clear_error(model):
    class Idle:
        stop_early = False

        def render(self, adapter, rendered):
            pass

    with pytest.raises(ValueError, match="Idle ran no forward pass"):
        render_batch(model, [SITE], Idle(), _prompts(2))


def test_harvest_needs_one_way_to_run_the_model(model, tmp_path):
    with pytest.raises(ValueError, match="either"):
        harvest(model, [], [SITE], tmp_path, forward=lambda b: None, renderer=TokenRows(),
                rows=row_selector("all"))
    with pytest.raises(ValueError, match="either"):
        harvest(model, [], [SITE], tmp_path, row_filter=skip_first_position)


def test_a_contrast_recipe_is_the_difference_of_the_harvested_means(manager, model):
    pos, neg = _prompts(4, seed=1), _prompts(4, seed=2)
    recipe = ConceptRecipe(name="c", site=SITE, renderer="token-rows", rows="skip-first",
                           positive=pos, negative=neg, batch_size=3, details={"why": "test"})
    concept = build_concept(model, recipe)
    select = row_selector("skip-first")
    p = collect(model, [pos], [SITE], renderer=TokenRows(), rows=select)
    n = collect(model, [neg], [SITE], renderer=TokenRows(), rows=select)
    expected = p.rows[SITE].mean(0) - n.rows[SITE].mean(0)
    torch.testing.assert_close(concept.directions[0] * concept.scales[0], expected, atol=1e-5, rtol=1e-4)
    assert concept.info.method == "mean-diff" and concept.info.details == {"why": "test"}
    assert concept.info.model == model.model_fingerprint and concept.info.site == SITE
    assert concept.info.site_norm == pytest.approx(
        float(torch.cat([p.rows[SITE], n.rows[SITE]]).norm(dim=-1).median()))
    pca = build_concept(model, ConceptRecipe(**{**recipe.__dict__, "method": "pca", "scale": "projection",
                                                "norm_from": "positive"}))
    assert float(pca.directions[0] @ concept.directions[0]) > 0, "pca points from negative to positive"
    assert pca.info.site_norm == pytest.approx(p.site_norm(SITE))
    assert float(pca.scales[0]) == pytest.approx(float(expected @ pca.directions[0]), rel=1e-4)


def test_identical_examples_or_bad_recipes_are_errors(manager, model):
    same = _prompts(3)
    with pytest.raises(ValueError, match="identical"):
        build_concept(model, ConceptRecipe(name="c", site=SITE, renderer="token-rows",
                                           positive=same, negative=same))
    with pytest.raises(ValueError, match="pairs"):
        build_concept(model, ConceptRecipe(name="c", site=SITE, renderer="token-rows", method="pca",
                                           positive=same, negative=same[:2]))
    with pytest.raises(ValueError, match="attribute"):
        build_concept(model, ConceptRecipe(name="c", site=SITE, renderer="token-rows", method="probe",
                                           examples=same))
    with pytest.raises(ValueError, match="neither registered"):
        build_concept(model, ConceptRecipe(name="c", site=SITE, renderer="token-rows", method="probe",
                                           examples=same, attribute="nope"))


def test_a_probe_recipe_fits_a_registered_attribute(manager, model):
    examples = _prompts(48, seed=3)
    recipe = ConceptRecipe(name="id", site="blocks.0.resid_post", renderer="token-rows",
                           rows="last-token", method="probe", examples=examples, attribute="last-token-id",
                           batch_size=16, scale="projection")
    concept = build_concept(model, recipe)
    details = concept.info.details
    assert concept.info.method == "probe" and details["train_r"] > 0.5
    ids = torch.stack(examples)[:, -1].float()
    assert details["attribute_mean"] == pytest.approx(float(ids.mean()), rel=1e-4)
    got = collect(model, [examples], ["blocks.0.resid_post"], renderer=TokenRows(), rows=last_token(),
                  attributes={"id": last_token_id()})
    read = got.rows["blocks.0.resid_post"] @ concept.directions[0]
    r = torch.corrcoef(torch.stack([read, got.values["blocks.0.resid_post"]["id"]]))[0, 1]
    assert r > 0.5, "reading along the probe tracks the attribute"


def test_contrast_concept_reads_rows_not_inputs():
    from polysteer.workflows.harvesting import Harvested

    def made(rows):
        return Harvested(["s"], len(rows), rows={"s": rows}, example={"s": torch.arange(len(rows))},
                         norms={"s": rows.norm(dim=-1)})

    pos, neg = made(torch.tensor([[2.0, 0.0], [4.0, 0.0]])), made(torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    d = contrast_concept("x", "s", pos, neg, model=None)
    torch.testing.assert_close(d.directions[0] * d.scales[0], torch.tensor([3.0, -1.0]))
    assert isinstance(Rows(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)).site_norms(), torch.Tensor)
