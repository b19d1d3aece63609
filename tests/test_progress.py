"""Long steps show progress on stderr: generate/draw/speak --grid and --compare over their columns,
classifier cross-validation over its fits (issue 19: minutes of silence before)."""

from __future__ import annotations

import torch

from polysteer.cli import main
from polysteer.features import fit_linear


def test_generate_grid_shows_a_bar_over_its_columns(plugin_manager, tmp_path, capsys):
    assert main(["generate", "--model", "reference", "--style", "reference-demo", "--intensity", "1",
                 "--grid", "3", "-o", str(tmp_path / "g")]) == 0
    err = capsys.readouterr().err
    assert "generating" in err and "/3 [" in err and "column" in err  # a bar over 3 columns


def test_cross_validation_shows_a_bar_over_its_fits(capsys):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    y = (x[:, 0] > 0).float()
    fit_linear(x, y, folds=2, strengths=[0.1, 0.01], progress=True)
    err = capsys.readouterr().err
    assert "cross-validating (l1)" in err and "/4 [" in err  # a bar over 2 strengths x 2 folds
    fit_linear(x, y, folds=2, strengths=[0.1], progress=False)
    assert capsys.readouterr().err == ""
