"""Text labels on a tiny random model: contexts, promoted tokens, rule labels, verification."""

from __future__ import annotations

import pytest
import torch

from polysteer.cli import main
from polysteer.features.dictionary import DictionaryInfo, DirectionSet, SparseAutoencoder, load_dictionary
from polysteer.features.labels import FeatureReport, load_labels, set_label
from polysteer.plugins.text import labels as text_labels
from polysteer.plugins.text.labels import (
    auto_label,
    collect_text_reports,
    label_dictionary,
    promoted_tokens,
    render_context,
    verify_labels,
)
from polysteer.plugins.text.testing import tiny_text_adapter

TEXTS = ["the cat sat on the mat", "a dog sat on a mat", "the happy cat was very good",
         "a sad dog is in the sea", "the red ship and the blue cat", "hello friend the day is good"]
PROMPTS = ["the dog sat on the", "hello friend", "a ship in the sea", "the day was very good and"]


@pytest.fixture(scope="module")
def adapter():
    return tiny_text_adapter("llama", seed=0)


def _id(adapter, word: str) -> int:
    return adapter.tokenizer.convert_tokens_to_ids(word)


def _unembedding(adapter, word: str) -> torch.Tensor:
    return adapter.model.get_output_embeddings().weight[_id(adapter, word)].detach().clone()


def _directions(adapter, vectors, labels, site="blocks.1.resid_post") -> DirectionSet:
    info = DictionaryInfo(model=adapter.model_fingerprint, site=site, site_norm=5.0, method="test")
    return DirectionSet(torch.stack(vectors), info, labels)


def _cat_sae(adapter) -> SparseAutoencoder:
    """A ReLU SAE on the embeddings (block 0's input): feature 0 fires on "cat" only."""
    embed = adapter.model.get_input_embeddings().weight.detach()
    cat = embed[_id(adapter, "cat")]
    info = DictionaryInfo(model=adapter.model_fingerprint, site="blocks.0.resid_pre",
                          site_norm=float(embed.norm(dim=1).median()), method="test")
    sae = SparseAutoencoder(32, 2, info, activation="relu")
    with torch.no_grad():
        unit = cat / cat.norm()
        sae.W_enc[:, 0] = unit
        sae.b_enc[0] = -0.8 * cat.norm()  # only "cat" itself projects this far
        sae.W_dec[0] = unit
        sae.b_dec.zero_()
        sae.W_enc[:, 1] = -unit
        sae.b_enc[1] = -10.0  # never fires
    return sae


def test_render_context(adapter):
    ids = adapter.encode(["the red ship and the blue cat sat on the mat"], chat=False)["input_ids"][0]
    assert render_context(adapter.tokenizer, ids, 6, window=2) == "…the blue «cat» sat on…"
    assert render_context(adapter.tokenizer, ids[:3], 0, window=4) == "«the» red ship"


def test_promoted_tokens_include_the_unembedded_token(adapter):
    d = _directions(adapter, [_unembedding(adapter, "cat"), _unembedding(adapter, "ship")],
                    ["a", "b"])
    promoted = promoted_tokens(adapter, d, k=3)
    assert "cat" in [w for _, w, _ in promoted[0]]
    assert "ship" in [w for _, w, _ in promoted[1]]
    assert all(w not in ("<pad>", "<s>", "</s>", "<unk>") for _, w, _ in promoted[0])


def test_feature_firing_on_one_word_is_labelled_with_it(adapter):
    sae = _cat_sae(adapter)
    reports = collect_text_reports(adapter, sae, TEXTS, top_k=5, batch_size=4, window=2)
    cat = reports[0]
    assert len(cat.top) == 3 and cat.details["firing"] == ["cat"] * 3
    assert {t.example for t in cat.top} == {0, 2, 4}
    assert cat.density == pytest.approx(3 / sum(len(t.split()) - 1 for t in TEXTS))
    assert "«cat»" in cat.details["contexts"][0]
    assert reports[1].top == [] and reports[1].density == 0.0
    auto_label(reports)
    assert cat.label == "cat" and cat.details["label_tokens"] == [_id(adapter, "cat")]
    assert cat.details["label_rule"] == "firing token"
    assert reports[1].details["label_rule"] == "promoted tokens"  # dead: named by what it promotes
    assert len(reports[1].label.split(" / ")) == 3


def _report(firing: list[str], ids: list[int] | None = None) -> FeatureReport:
    return FeatureReport(0, "feature 0", details={"firing": firing,
                                                  "firing_ids": ids or list(range(len(firing)))})


def test_labels_name_a_class_of_firing_words_or_the_most_frequent_ones():
    digits = _report(["5", "4", "3", "6", "1", "2", "cat"])
    words = _report(["SMS", "text", "sms", "messages", "text", "reply"], [9, 8, 7, 6, 8, 5])
    auto_label([digits, words])
    assert (digits.label, digits.details["label_rule"]) == ("digits", "token class")
    assert digits.details["label_tokens"] == [0, 1, 2, 3, 4, 5]  # not "cat"
    # no word dominates: the three most frequent, ties in order of the top contexts
    assert (words.label, words.details["label_rule"]) == ("SMS / text / messages", "firing words")
    assert words.details["label_tokens"] == [6, 7, 8, 9]


def test_verify_by_effect(adapter):
    cat, dog = _unembedding(adapter, "cat"), _unembedding(adapter, "dog")
    d = _directions(adapter, [cat, dog, torch.randn(32, generator=torch.Generator().manual_seed(3))],
                    ["cat", "wrong", "random"])
    token = [_id(adapter, "cat")]
    reports = [FeatureReport(i, "cat", details={"label_tokens": token}) for i in range(3)]
    rows = verify_labels(adapter, d, reports, PROMPTS, intensity=1.0, threshold=0.05)
    assert [r["feature"] for r in rows] == [0, 1, 2]
    assert reports[0].effect_score > 0.05 and not reports[0].flagged
    # steering towards "dog" or anywhere does not make "cat" (much) more likely: the labels fail
    assert reports[1].flagged and reports[1].effect_score < 0.2 * reports[0].effect_score
    assert reports[2].flagged and reports[2].effect_score < 0.2 * reports[0].effect_score
    assert rows[0]["tokens"] == token


def test_user_label_tokens_come_from_its_words(adapter):
    report = FeatureReport(0, "cat / dog", source="user", details={"label_tokens": [5]})
    assert text_labels.label_tokens(adapter, report) == sorted([_id(adapter, "cat"), _id(adapter, "dog")])


def test_label_dictionary_end_to_end_and_cli(adapter, tmp_path, capsys):
    folder = tmp_path / "cat-sae"
    sae = _cat_sae(adapter)
    sae.save(folder)
    label_dictionary(adapter, sae, TEXTS, folder, top_k=4, prompts=PROMPTS)
    assert load_dictionary(folder).labels[0] == "cat"
    saved = load_labels(folder)
    assert saved[0].label == "cat" and saved[0].effect_score is not None

    set_label(folder, 1, "never fires")
    label_dictionary(adapter, load_dictionary(folder), TEXTS, folder, top_k=4, verify=False)
    assert load_labels(folder)[1].label == "never fires"
    assert load_dictionary(folder).labels == ["cat", "never fires"]

    assert main(["labels", "show", str(folder)]) == 0
    assert main(["labels", "show", str(folder), "--feature", "cat"]) == 0
    assert main(["labels", "set", str(folder), "cat", "kitty"]) == 0
    out = capsys.readouterr().out
    assert "never fires" in out and "«cat»" in out and "kitty [user]" in out
    assert load_dictionary(folder).labels[0] == "kitty"


def test_core_label_by_effect_with_the_text_measure_labels_a_planted_feature(adapter, plugin_manager,
                                                                             tmp_path):
    from polysteer.workflows.label_effect import Candidate, label_by_effect

    cat, dog = _unembedding(adapter, "cat"), _unembedding(adapter, "dog")
    d = _directions(adapter, [cat, dog], ["a", "b"])
    tokens = {"cat": [_id(adapter, "cat")]}
    result = label_by_effect(adapter, d, [Candidate(0, "cat"), Candidate(1, "cat")], PROMPTS, "text-logprob",
                             intensity=1.0, floors=0.05, options={"tokens": tokens}, folder=tmp_path)
    assert d.labels == ["cat+ (0)", "b"]  # steering towards "dog" does not make "cat" likelier
    assert result.evidence["cat+ (0)"]["change"] > 0.05
    saved = load_labels(tmp_path)
    assert not saved[0].flagged and saved[1].flagged


def test_labels_show_reads_labels_kept_in_the_dictionary_file(tmp_path, capsys, plugin_manager):
    """A dictionary labelled in its own file but without labels.json used to say 'no labels yet'."""
    import torch

    from polysteer.cli import main
    from polysteer.features import direction_set

    direction_set([torch.ones(4), -torch.ones(4)], ["calm", "feature 1"], site="blocks.0.resid_post",
                  site_norm=1.0, model=None, method="test").save(tmp_path / "d")
    assert main(["labels", "show", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 features" in out and "calm" in out and "no labels yet" not in out
    assert main(["labels", "show", str(tmp_path / "d"), "--feature", "calm"]) == 0
    assert capsys.readouterr().out.startswith("feature 0: calm [from the dictionary file")
    direction_set([torch.ones(4)], ["feature 0"], site="blocks.0.resid_post", site_norm=1.0, model=None,
                  method="test").save(tmp_path / "bare")
    assert main(["labels", "show", str(tmp_path / "bare")]) == 1
    assert "no labels yet" in capsys.readouterr().out
