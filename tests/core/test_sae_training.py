"""SAE training on synthetic data with a known sparse structure, and on the reference model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from polysteer.features.dictionary import DictionaryInfo, SparseAutoencoder, load_dictionary
from polysteer.models.reference import ReferenceAdapter, reference_prompts
from polysteer.steering.runtime import steer
from polysteer.steering.style import Component, Style
from polysteer.workflows.harvesting import harvest
from polysteer.workflows.sae_training import (
    TrainConfig,
    evaluate,
    fold_normalisation,
    loss_recovered,
    train_sae,
)

SITE = "blocks.0.resid_post"


def synthetic(n: int = 16384, d: int = 64, m: int = 128, p: float = 4 / 128, seed: int = 0
              ) -> torch.Tensor:
    """Rows made of ~``p * m`` of ``m`` unit directions with positive weights, plus an offset."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(m, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    active = torch.rand(n, m, generator=g) < p
    weights = torch.rand(n, m, generator=g) + 0.5
    return (active * weights) @ dirs * 3.0 + 0.5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return synthetic()


def _config(**kw) -> TrainConfig:
    base = {"d_features": 256, "k": 8, "batch_size": 256, "steps": 400, "lr": 3e-3,
            "dead_after": 4096, "log_every": 100, "eval_tokens": 8192}
    return TrainConfig(**{**base, **kw})


def test_topk_recovers_the_sparse_structure(data):
    sae, m = train_sae(data, _config(), progress=False)
    assert m["fve"] > 0.9 and m["l0"] <= 8 and m["eval_dead_fraction"] < 0.1
    assert sae.info.method == "sae-topk" and sae.info.details["config"]["k"] == 8
    assert sae.info.details["metrics"]["fve"] == m["fve"]
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(256), atol=1e-4)
    # feature_scale is each feature's mean firing value on raw data: read-out / scale ~ 1
    with torch.no_grad():
        f = sae.encode(data)
    count = (f > 0).sum(0)
    often = count >= 50
    ratio = (f.sum(0) / count.clamp_min(1))[often] / sae.feature_scale[often]
    assert often.sum() > 100 and (ratio - 1).abs().median() < 0.05


@pytest.mark.parametrize("activation,max_l0", [("relu", 60), ("jumprelu", 20)])
def test_relu_and_jumprelu_train_to_a_reasonable_sparse_fit(data, activation, max_l0):
    sae, m = train_sae(data, _config(activation=activation, steps=300), progress=False)
    assert m["fve"] > 0.7 and m["l0"] < max_l0
    if activation == "jumprelu":
        assert (sae.threshold > 0).all() and sae.threshold.std() > 0  # the STE moved thresholds


def test_training_is_deterministic_given_the_seed(data):
    a, _ = train_sae(data, _config(steps=20), progress=False)
    b, _ = train_sae(data, _config(steps=20), progress=False)
    c, _ = train_sae(data, _config(steps=20, seed=1), progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                     strict=True))
    assert not torch.equal(a.W_dec, c.W_dec)


def test_resampling_reduces_dead_features():
    few = synthetic(m=16, p=2 / 16)  # far fewer true features than SAE features: many die
    kw = {"d_features": 128, "k": 4, "steps": 300, "dead_after": 8192}
    _, off = train_sae(few, _config(resample=False, **kw), progress=False)
    _, on = train_sae(few, _config(**kw), progress=False)
    assert on["resampled"] > 0 and off["resampled"] == 0
    assert on["dead_fraction"] < off["dead_fraction"] - 0.05
    assert on["eval_dead_fraction"] < off["eval_dead_fraction"]


@pytest.mark.parametrize("activation,k", [("topk", 3), ("jumprelu", None), ("relu", None)])
def test_folding_the_normalisation_gives_the_same_model_on_raw_inputs(activation, k):
    torch.manual_seed(0)
    info = DictionaryInfo(model=None, site="s", site_norm=1.0)
    sae = SparseAutoencoder(16, 32, info, activation, k)
    with torch.no_grad():
        for p in (sae.b_enc, sae.b_dec):
            p.normal_(0, 0.1)
        sae.threshold.uniform_(0.0, 0.2)
    c = 0.05
    folded = copy.deepcopy(sae)
    fold_normalisation(folded, c)
    raw = torch.randn(100, 16) * 20
    assert torch.allclose(folded.encode(raw), sae.encode(raw * c) / c, atol=1e-4)
    assert torch.allclose(folded.decode(folded.encode(raw)), sae.decode(sae.encode(raw * c)) / c,
                          atol=1e-3)
    assert torch.equal(folded.W_dec, sae.W_dec)  # unit decoder rows survive the fold


def test_evaluate_matches_train_metrics_on_raw_data(data):
    sae, m = train_sae(data, _config(steps=50), progress=False)
    again = evaluate(sae, data, config=_config(steps=50))
    assert again["fve"] == pytest.approx(m["fve"]) and again["eval_tokens"] == 8192


# -- on the reference model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def adapter() -> ReferenceAdapter:
    return ReferenceAdapter()


@pytest.fixture(scope="module")
def sequences(adapter) -> torch.Tensor:
    """The model's own greedy continuations: text it predicts well (low clean loss)."""
    return adapter.generate(reference_prompts(samples=96, length=4, seed=2), max_new_tokens=20).outputs


def _loss(adapter):
    def loss(ids: torch.Tensor) -> torch.Tensor:
        logits = adapter.model(ids)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    return loss


@pytest.fixture(scope="module")
def trained(adapter, sequences, tmp_path_factory):
    folder = tmp_path_factory.mktemp("acts")
    store = harvest(adapter, [list(sequences[i:i + 16]) for i in range(0, 96, 16)], [SITE], folder,
                    forward=lambda b: adapter.logits(torch.stack(list(b))), progress=False)
    cfg = TrainConfig(d_features=64, k=6, batch_size=128, steps=300, lr=3e-3, dead_after=2048,
                      log_every=100)
    return train_sae(store, cfg, site=SITE, progress=False)


def test_trained_sae_saves_loads_and_steers_the_reference_model(trained, adapter, tmp_path):
    sae, metrics = trained
    assert sae.info.model.matches(adapter.model_fingerprint) and sae.info.site == SITE
    assert metrics["fve"] > 0.5
    sae.save(tmp_path / "sae")
    loaded = load_dictionary(tmp_path / "sae")
    assert torch.equal(loaded.feature_scale, sae.feature_scale)
    assert loaded.info.details["config"]["k"] == 6
    prompts = reference_prompts(samples=2, length=6)
    plain = adapter.generate(prompts, max_new_tokens=6).outputs
    feature = int(sae.feature_scale.argmax())
    for kind, weight in (("clamp", 1.0), ("add", 2.0)):
        style = Style(name=kind, components=[Component(
            name=kind, dictionary=str(tmp_path / "sae"), feature=feature, intervention=kind,
            options={"value": 8.0} if kind == "clamp" else {}, weight=weight)])
        with steer(adapter, style, 0.0):
            assert torch.equal(adapter.generate(prompts, max_new_tokens=6).outputs, plain)
        with steer(adapter, style, 1.0, capture=[SITE]) as run:
            adapter.generate(prompts, max_new_tokens=6)
        assert not torch.equal(run.captured(SITE), _captured(adapter, prompts))


def _captured(adapter, prompts) -> torch.Tensor:
    with steer(adapter, None, capture=[SITE]) as run:
        adapter.generate(prompts, max_new_tokens=6)
    return run.captured(SITE)


def test_loss_recovered_is_between_zero_and_one_for_a_trained_sae(trained, adapter, sequences):
    sae, _ = trained
    result = loss_recovered(adapter, sae, SITE, sequences[:48].split(16), _loss(adapter))
    assert result["zero"] > result["clean"]
    assert 0.0 < result["loss_recovered"] < 1.0


def test_loss_recovered_is_one_for_an_identity_sae(adapter, sequences):
    d = 32
    info = DictionaryInfo(model=None, site=SITE, site_norm=1.0)
    identity = SparseAutoencoder(d, 2 * d, info, "relu")
    eye = torch.eye(d)
    with torch.no_grad():  # relu(x) - relu(-x) = x
        identity.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        identity.W_dec.copy_(torch.cat([eye, -eye]))
    result = loss_recovered(adapter, identity, SITE, sequences[:32].split(16), _loss(adapter))
    assert result["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
