"""``polysteer inspect --html``: a self-contained, deterministic page of tokens highlighted per feature."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from polysteer.features.dictionary import DictionaryInfo, SparseAutoencoder
from polysteer.plugins.text import commands
from polysteer.plugins.text.inspect import (
    inspect_text,
    read_text,
    render_html,
    strongest_features,
    write_inspect_html,
)
from polysteer.plugins.text.testing import tiny_text_adapter

pytest.importorskip("transformers")

SITE = "blocks.1.resid_post"
TEXT = "the cat sat on the zebra mat"  # "zebra" is out of vocabulary: the token <unk>


@pytest.fixture(scope="module")
def adapter():
    return tiny_text_adapter("llama")


@pytest.fixture(scope="module")
def sae(adapter):
    torch.manual_seed(0)
    info = DictionaryInfo(model=adapter.model_fingerprint, site=SITE, site_norm=1.0)
    labels = [f"feature <{i}> & co" for i in range(6)]
    return SparseAutoencoder(32, 6, info, activation="relu", labels=labels)


def test_page_highlights_the_strongest_features(adapter, sae, tmp_path):
    readout = read_text(adapter, sae, TEXT)
    assert readout.tokens == ["the", "cat", "sat", "on", "the", "<unk>", "mat"]
    chosen = strongest_features(readout, features=3)
    assert len(chosen) == 3
    peaks = readout.values.abs().amax(0)
    assert peaks[chosen[0]] == peaks.max() and peaks[chosen[0]] >= peaks[chosen[1]] >= peaks[chosen[2]]

    path = write_inspect_html(readout, tmp_path / "report.html", features=3)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "http" not in page, "self-contained"
    assert page.count('class="feature"') == 3
    for i in chosen:
        assert f"#{i} feature &lt;{i}&gt; &amp; co" in page, "labels are escaped"
    assert "<unk>" not in page and "&lt;unk&gt;" in page, "tokens are escaped"
    assert page.count('class="tok"') == 3 * len(readout.tokens)
    alphas = [float(a) for a in re.findall(r"rgba\([\d,]+,([\d.]+)\)", page)]
    assert max(alphas) == 1.0 and min(alphas) >= 0.0, "each feature's peak token is fully coloured"
    top_value = readout.values[:, chosen[0]]
    assert f"max {top_value[top_value.abs().argmax()].item():+.3f}" in page


def test_page_is_deterministic_and_written_atomically(adapter, sae, tmp_path):
    first = write_inspect_html(read_text(adapter, sae, TEXT), tmp_path / "a.html").read_bytes()
    second = write_inspect_html(read_text(adapter, sae, TEXT), tmp_path / "b.html").read_bytes()
    assert first == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.html"], "no temp files left"


def test_a_text_where_nothing_fires(adapter, sae):
    readout = read_text(adapter, sae, "the cat")
    readout.values = torch.zeros_like(readout.values)
    assert strongest_features(readout) == []
    assert "No feature fires" in render_html(readout)


def test_inspect_command_writes_html_and_keeps_the_terminal_output(adapter, sae, tmp_path, monkeypatch,
                                                                   capsys):
    sae.save(tmp_path / "tiny-sae")
    monkeypatch.setattr(commands, "load_text_model", lambda name: adapter)
    args = argparse.Namespace(model="tiny", dictionary=str(tmp_path / "tiny-sae"), top=2, text=TEXT,
                              html=str(tmp_path / "out" / "report.html"), html_features=4)
    assert commands._inspect_run(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    rows = inspect_text(adapter, sae, TEXT, top=2)
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows, strict=True):
        assert line.split()[0] == repr(row["token"])
        assert f"{row['features'][0][1]:+.2f}" in line
    assert "report.html" in captured.err
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert page.count('class="feature"') == 4
    args.html = None
    assert commands._inspect_run(args) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines
