"""The feature recogniser's machinery on the tiny random text model: fit, save, load, read messages
through the core harvest exactly as the classifiers were fitted, decide, and feed a store.
(The shipped SmolLM2 recogniser's quality is tests/text/test_smollm2_preferences.py.)"""

from __future__ import annotations

import pytest
import torch

from polysteer.errors import DictionaryMismatchError
from polysteer.plugins.text.classify import drop_sinks, fit_text_classifier, text_activations
from polysteer.plugins.text.testing import tiny_text_adapter
from polysteer.preferences import (
    FeatureRecogniser,
    PreferenceStore,
    RecogniserError,
    find_recogniser,
    load_recogniser,
)

SITE = "blocks.1.resid_post"
ROWS = [  # (text, preference, polarity)
    ("be brief please", "concise", "on"), ("short answers please", "concise", "on"),
    ("keep it brief", "concise", "on"), ("brief replies please", "concise", "on"),
    ("you can be long again", "concise", "off"), ("long answers again", "concise", "off"),
    ("be formal please", "formal", "on"), ("formal tone please", "formal", "on"),
    ("please sound formal", "formal", "on"), ("formal replies please", "formal", "on"),
    ("stop being formal", "formal", "off"), ("no formal tone again", "formal", "off"),
    ("the cat sat on the mat", None, None), ("what is the capital", None, None),
    ("a dog ran in the park", None, None), ("how do birds fly", None, None),
    ("tell me about the sea", None, None), ("the sun is hot", None, None),
]


@pytest.fixture(scope="module")
def adapter():
    return tiny_text_adapter()


@pytest.fixture(scope="module")
def recogniser(adapter, tmp_path_factory):
    texts = [r[0] for r in ROWS]
    acts = text_activations(adapter, texts, SITE)
    stated = [i for i, r in enumerate(ROWS) if r[1]]
    fit = dict(site=SITE, folds=2)
    detector = fit_text_classifier(adapter, None, texts, ["stated" if r[1] else "no" for r in ROWS],
                                   positive="stated", acts=acts, **fit)
    which = {n: fit_text_classifier(adapter, None, [texts[i] for i in stated],
                                    [n if ROWS[i][1] == n else "other" for i in stated], positive=n,
                                    acts=[acts[i] for i in stated], **fit) for n in ("concise", "formal")}
    polarity = fit_text_classifier(adapter, None, [texts[i] for i in stated],
                                   [ROWS[i][2] for i in stated], positive="off",
                                   acts=[acts[i] for i in stated], **fit)
    info = {"format": "polysteer-preference-recogniser", "version": 1, "name": "tiny-preferences",
            "model": adapter.model_fingerprint.to_json(), "site": SITE,
            "detector": {"threshold": 0.5}, "polarity": {"threshold": 0.5},
            "preferences": {"concise": {}, "formal": {}}}
    folder = tmp_path_factory.mktemp("rec") / "tiny-preferences"
    FeatureRecogniser(info, detector, which, polarity).save(folder)
    return load_recogniser(folder)


def test_reads_messages_exactly_as_the_classifiers_were_fitted(adapter, recogniser):
    texts = [r[0] for r in ROWS]
    core = recogniser.activations(texts, adapter)
    plugin = drop_sinks(text_activations(adapter, texts, SITE), recogniser.detector.site_norm)
    assert all(torch.allclose(a, b) for a, b in zip(core, plugin, strict=True))
    expected = recogniser.detector.probabilities(plugin)
    assert torch.allclose(recogniser.scores(core)["detector"], expected)


def test_decisions_follow_the_scores(adapter, recogniser):
    texts = [r[0] for r in ROWS]
    scores = recogniser.scores(recogniser.activations(texts, adapter))
    found = recogniser.recognise(texts, adapter)
    for i, one in enumerate(found):
        if scores["detector"][i] < 0.5:
            assert one == []
            continue
        [r] = one
        best = max(scores["which"], key=lambda n: float(scores["which"][n][i]))
        assert r.name == best and r.on == bool(scores["off"][i] < 0.5)
    assert recogniser.recognise([], adapter) == []


def test_store_uses_the_recogniser(adapter, recogniser, tmp_path):
    store = PreferenceStore(tmp_path / "p.sqlite", recogniser)
    text = ROWS[0][0]
    expected = [r.name for r in recogniser.recognise([text], adapter)[0] if r.on]
    got = store.observe("ann", text, adapter)
    assert [p.name for p in got] == expected
    assert store.turn("ann") == 1


def test_another_model_is_refused(recogniser):
    with pytest.raises(DictionaryMismatchError, match="fitted on"):
        recogniser.activations(["be brief"], tiny_text_adapter(seed=5))


def test_missing_recogniser_says_how_to_build_one(tmp_path):
    with pytest.raises(RecogniserError, match="build_preferences"):
        load_recogniser(tmp_path)
    with pytest.raises(RecogniserError, match="not found"):
        find_recogniser(None, "no-such-recogniser")


def test_a_recogniser_is_replaced_atomically_and_read_from_one_version(recogniser, tmp_path):
    from polysteer.errors import CorruptFileError

    folder = tmp_path / "rec"
    recogniser.save(folder)
    recogniser.save(folder)  # replaced: the name is now a link to a whole version folder
    assert folder.is_symlink()
    again = load_recogniser(folder)
    assert sorted(again.classifiers) == sorted(recogniser.classifiers)
    (folder / "recogniser.json").write_text('{"format": "polysteer-preference-recogniser", "version": 9}')
    with pytest.raises(CorruptFileError, match="format version 9.*upgrade polysteer"):
        load_recogniser(folder)
    (folder / "recogniser.json").write_text('{"format": "polysteer-preference-recogniser", "version": 1}')
    with pytest.raises(CorruptFileError, match="recogniser.json: KeyError.*build_preferences"):
        load_recogniser(folder)
