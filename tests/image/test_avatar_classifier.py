"""The shipped avatar attribute classifier reads rendered avatars, and saves/loads exactly."""

import pytest
import torch

from polysteer import Generation
from polysteer.plugin.manager import current_plugin_manager
from polysteer.plugins.image.avatars import ATTRIBUTES
from polysteer.plugins.image.classifier import AttributeClassifier, load_classifier, shipped_classifier


def test_shipped_classifier_tells_sunglasses_from_bare_eyes():
    pytest.importorskip("python_avatars")
    pytest.importorskip("resvg_py")
    from polysteer.plugins.image.avatars import render_pairs

    shades, bare = render_pairs(8, {"glasses": "sunglasses"}, {"glasses": "none"}, seed=5)
    clf = shipped_classifier()
    assert float(clf.score(shades.float() / 255, "glasses", "sunglasses").mean()) > 0.8
    assert float(clf.score(bare.float() / 255, "glasses", "sunglasses").mean()) < 0.2
    measure = current_plugin_manager().measures.get("avatar_glasses_sunglasses")
    assert measure(Generation(shades.float() / 255, "image"), None) > 0.8


def test_classifier_round_trip(tmp_path):
    torch.manual_seed(0)
    model = AttributeClassifier(ATTRIBUTES).eval()
    model.save(tmp_path / "clf")
    images = torch.rand(2, 3, 32, 32)
    again = load_classifier(tmp_path / "clf")
    assert list(again.attributes) == list(ATTRIBUTES)
    for k, v in model.probabilities(images).items():
        assert torch.equal(v, again.probabilities(images)[k])
    with pytest.raises(KeyError, match="no glasses=monocle"):
        model.score(images, "glasses", "monocle")
