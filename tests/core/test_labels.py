"""Feature reports: streamed top-k, density, histogram, the labels.json sidecar and user labels."""

from __future__ import annotations

import json

import pytest
import torch

from polysteer.errors import CorruptFileError
from polysteer.features.dictionary import DictionaryInfo, DirectionSet, SparseAutoencoder, load_dictionary
from polysteer.features.labels import (
    FeatureReport,
    apply_labels,
    collect_reports,
    label_table,
    load_labels,
    save_labels,
    set_label,
)


def _sae(d_in: int = 8, n: int = 6, activation: str = "relu", seed: int = 0) -> SparseAutoencoder:
    torch.manual_seed(seed)
    info = DictionaryInfo(model=None, site="blocks.0.resid_post", site_norm=3.0, method="sae-test")
    sae = SparseAutoencoder(d_in, n, info, activation=activation, k=3 if activation == "topk" else None)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(n) * 0.3)
        sae.feature_scale.copy_(torch.rand(n) + 0.5)
    return sae


def _examples(count: int = 9, d_in: int = 8, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(int(torch.randint(1, 12, (1,), generator=g)), d_in, generator=g)
            for _ in range(count)]


def _brute(sae, examples, k):
    rows = []
    for e, acts in enumerate(examples):
        f = sae.encode(acts).detach()
        for p in range(f.shape[0]):
            rows.append((e, p, f[p]))
    out = []
    for i in range(sae.d_features):
        cands = sorted(((float(f[i]), e, p) for e, p, f in rows if f[i] > 0), reverse=True)[:k]
        out.append([(e, p, v) for v, e, p in cands])
    return out, rows


@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_streaming_top_k_equals_brute_force(activation):
    sae, examples = _sae(activation=activation), _examples()
    batches = [examples[:4], examples[4:5][0], examples[5:]]  # lists and single tensors mix
    reports = collect_reports(sae, batches, top_k=5)
    expected, _ = _brute(sae, examples, 5)
    for report, want in zip(reports, expected, strict=True):
        got = [(t.example, t.position, t.value) for t in report.top]
        assert [(e, p) for e, p, _ in got] == [(e, p) for e, p, _ in want]
        assert [v for *_, v in got] == pytest.approx([v for *_, v in want], abs=1e-5)


def test_density_and_histogram():
    sae, examples = _sae(), _examples()
    reports = collect_reports(sae, [examples], top_k=3, bins=4, hist_max=2.0)
    _, rows = _brute(sae, examples, 3)
    values = torch.stack([f for *_, f in rows])
    assert all(r.positions == len(rows) for r in reports)
    for i, report in enumerate(reports):
        col = values[:, i]
        assert report.density == pytest.approx(float((col > 0).float().mean()))
        width = float(sae.scales[i]) * 2.0 / 4
        assert report.bin_edges == pytest.approx([width * b for b in range(5)], rel=1e-5)
        positive = col[col > 0]
        expected = [int(((positive >= width * b) & (positive < width * (b + 1))).sum()) for b in range(3)]
        expected.append(int((positive >= width * 3).sum()))  # the last bin holds larger values too
        assert report.histogram == expected
        assert sum(report.histogram) == len(positive)


def test_directions_and_empty_examples():
    info = DictionaryInfo(model=None, site="s", site_norm=1.0)
    d = DirectionSet(torch.eye(3), info, ["x", "y", "z"])
    acts = torch.tensor([[1.0, -2.0, 0.0], [3.0, 1.0, 0.0]])
    reports = collect_reports(d, [acts, torch.zeros(0, 3)], top_k=4)
    assert [(t.position, t.value) for t in reports[0].top] == [(1, 3.0), (0, 1.0)]
    assert [(t.position, t.value) for t in reports[1].top] == [(1, 1.0)]
    assert reports[2].top == [] and reports[2].density == 0.0
    assert reports[1].density == 0.5 and reports[0].label == "x"


def test_labels_round_trip(tmp_path):
    sae = _sae()
    reports = collect_reports(sae, [_examples()], top_k=3)
    reports[1].effect_score, reports[1].flagged = -0.25, True
    reports[2].details = {"contexts": ["the «cat» sat"], "label_tokens": [5, 6]}
    sae.save(tmp_path / "d")
    save_labels(tmp_path / "d", reports)
    loaded = load_labels(tmp_path / "d")
    assert loaded == reports
    assert "DOES NOT HOLD" in label_table(loaded)


def test_apply_labels_and_user_labels_survive(tmp_path):
    sae, folder = _sae(), tmp_path / "d"
    reports = collect_reports(sae, [_examples()], top_k=3)
    for r in reports:
        r.label = f"auto {r.feature}"
    apply_labels(sae, reports, folder)
    assert load_dictionary(folder).labels == [f"auto {i}" for i in range(6)]
    assert [r.label for r in load_labels(folder)] == [f"auto {i}" for i in range(6)]

    edited = set_label(folder, "auto 2", "cats")
    assert edited.source == "user" and edited.feature == 2
    assert load_dictionary(folder).labels[2] == "cats"

    again = collect_reports(sae, [_examples(seed=3)], top_k=3)
    for r in again:
        r.label = "relabelled"
    saved = apply_labels(sae, again, folder)
    assert saved[2].label == "cats" and saved[2].source == "user"
    on_disk = load_labels(folder)
    assert on_disk[2].label == "cats" and on_disk[2].source == "user"
    assert on_disk[0].label == "relabelled" and on_disk[0].source == "auto"
    labels = load_dictionary(folder).labels
    assert labels[2] == "cats" and labels[0] == "relabelled #0"  # repeats made unique
    save_labels(folder, again)  # the sidecar alone keeps user labels too
    assert load_labels(folder)[2].label == "cats"


def test_corrupt_labels_file(tmp_path):
    (tmp_path / "labels.json").write_text("{not json")
    with pytest.raises(CorruptFileError):
        load_labels(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps({"format": "polysteer-labels", "features": [
        {"feature": 0, "label": "a", "source": "robot"}]}))
    with pytest.raises(CorruptFileError, match="source"):
        load_labels(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CorruptFileError):
        load_labels(tmp_path)


def test_report_from_json_defaults():
    r = FeatureReport.from_json({"feature": 3, "label": "x"})
    assert r.source == "auto" and r.top == [] and r.effect_score is None


def test_apply_labels_keeps_stored_tensors_and_foreign_folders(tmp_path):
    from safetensors.torch import load_file

    sae, folder = _sae(), tmp_path / "half"
    try:
        sae.save(folder, dtype=torch.float16)
    except TypeError:  # a save() without dtype: nothing to preserve
        sae.save(folder)
    before = load_file(str(folder / "dictionary.safetensors"))
    reports = collect_reports(sae, [_examples()], top_k=2)
    for r in reports:
        r.label = f"f{r.feature}"
    apply_labels(sae, reports, folder)
    after = load_file(str(folder / "dictionary.safetensors"))
    assert all(before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]) for k in before)
    assert load_dictionary(folder).labels[3] == "f3"

    foreign = tmp_path / "saelens"
    foreign.mkdir()
    (foreign / "cfg.json").write_text("{}")
    apply_labels(sae, reports, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["cfg.json", "labels.json"]
    assert load_labels(foreign)[3].label == "f3" and sae.labels[3] == "f3"


def test_saving_a_loaded_dictionary_keeps_its_label_evidence(tmp_path):
    sae, folder = _sae(), tmp_path / "d"
    reports = collect_reports(sae, [_examples()], top_k=3)
    apply_labels(sae, reports, folder)
    loaded = load_dictionary(folder)
    loaded.save(tmp_path / "copy")
    assert [r.to_json() for r in load_labels(tmp_path / "copy")] == [r.to_json() for r in load_labels(folder)]
    loaded.save(folder)  # saved over its own folder: the evidence is not lost either
    assert (folder / "labels.json").exists()
    _sae(seed=1).save(tmp_path / "fresh")  # an in-memory dictionary has no evidence to carry
    assert not (tmp_path / "fresh" / "labels.json").exists()
