"""The demo and the shipped reference dictionary."""

import torch

from polysteer import load_dictionary
from polysteer.builtins import SHIPPED
from polysteer.models.reference import ReferenceAdapter
from polysteer.workflows.demo import build_demo_dictionary, high_token_fraction


def test_shipped_dictionary_is_reproducible():
    adapter = ReferenceAdapter()
    shipped = load_dictionary(SHIPPED / "dictionary" / "reference-high-tokens")
    rebuilt = build_demo_dictionary(adapter)
    assert torch.allclose(shipped.directions, rebuilt.directions, atol=1e-6)
    assert abs(shipped.info.site_norm - rebuilt.info.site_norm) < 1e-4
    shipped.check_compatible(adapter.model_fingerprint, shipped.info.site, 32)


def test_demo_concept_steers_towards_high_tokens():
    adapter = ReferenceAdapter()
    dictionary = build_demo_dictionary(adapter)
    from polysteer import Style

    style = Style.from_dict({"components": [{"dictionary": "d", "feature": "high tokens"}]})
    style.components[0].dictionary = dictionary
    prompts = torch.tensor([[3, 7, 1, 12, 9, 4], [25, 2, 8, 17, 30, 6]])
    fractions = []
    for intensity in (0.0, 1.0):
        out = adapter.generate(prompts, style=style, intensity=intensity, max_new_tokens=12)
        fractions.append(high_token_fraction(out, out))
    assert fractions[1] > fractions[0] + 0.2


def test_demo_runs(tmp_path, capsys, plugin_manager):
    from polysteer.workflows.demo import run_demo

    run_demo(tmp_path)
    out = capsys.readouterr().out
    assert "intensity 2.0" in out and "report.html" in out
