"""Feature search on synthetic dictionaries whose answers are known."""

from __future__ import annotations

import pytest
import torch

from polysteer.errors import SteeringError
from polysteer.features.dictionary import DictionaryInfo, DirectionSet, SparseAutoencoder
from polysteer.features.search import contrast_features, pool_activations, search_labels, similar_features

LABELS = ["happy mood", "sad mood", "spam offer", "pirate speech", "formal tone", "money and prizes"]
INFO = DictionaryInfo(model=None, site="blocks.0.resid_post", site_norm=1.0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def axes() -> DirectionSet:
    """Feature i reads channel i."""
    return DirectionSet(torch.eye(6), INFO, LABELS)


def test_search_labels_by_words_and_spelling(axes):
    assert search_labels(axes, "Spam")[0][:2] == (2, "spam offer")
    assert search_labels(axes, "MOOD", top=2) == [(0, "happy mood", 1.0), (1, "sad mood", 1.0)]
    assert search_labels(axes, "happ")[0].index == 0, "a word prefix matches"
    assert search_labels(axes, "pirat speach")[0].index == 3, "typos still match by spelling"
    assert search_labels(axes, "prizes money")[0].index == 5
    assert len(search_labels(axes, "mood", top=1)) == 1
    assert all(m.score > 0 for m in search_labels(axes, "zzzz"))


def _examples(hot: list[int], n: int, seed: int) -> list[torch.Tensor]:
    """n examples of 3-6 tokens with small noise; one token of each fires the ``hot`` channels."""
    g = _gen(seed)
    out = []
    for e in range(n):
        x = torch.randn(3 + e % 4, 6, generator=g) * 0.1
        x[e % x.shape[0], hot] += 2.0 + torch.rand(len(hot), generator=g)
        out.append(x)
    return out


def test_contrast_finds_the_features_of_the_positive_examples(axes):
    spam, ham = _examples([2, 5], 8, seed=1), _examples([0], 8, seed=2)
    found = contrast_features(axes, spam, ham, top=3)
    assert {m.index for m in found[:2]} == {2, 5}
    assert found[0].label in ("spam offer", "money and prizes")
    assert found[0].pos_mean > 2 and abs(found[0].neg_mean) < 1
    assert all(a.score >= b.score for a, b in zip(found, found[1:], strict=False))
    assert 0 not in {m.index for m in found}, "features of the negatives never score positive"
    reverse = contrast_features(axes, ham, spam, top=1)
    assert reverse[0].index == 0


def test_mean_pooling_dilutes_a_single_token(axes):
    spam, ham = _examples([2], 6, seed=3), _examples([4], 6, seed=4)
    by_max = pool_activations(axes, spam, "max")[:, 2]
    by_mean = pool_activations(axes, spam, "mean")[:, 2]
    assert (by_max > by_mean).all()
    assert contrast_features(axes, spam, ham, pool="mean")[0].index == 2
    with pytest.raises(ValueError, match="pool"):
        contrast_features(axes, spam, ham, pool="median")
    with pytest.raises(ValueError, match="no examples"):
        contrast_features(axes, [], ham)


def test_contrast_works_with_a_sparse_autoencoder_and_is_deterministic():
    sae = SparseAutoencoder(6, 6, INFO, "relu", labels=LABELS)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(6))
        sae.W_dec.copy_(torch.eye(6))
    spam, ham = _examples([2], 5, seed=5), _examples([1], 5, seed=6)
    first = contrast_features(sae, spam, ham)
    assert first[0].index == 2 and first == contrast_features(sae, spam, ham)


def test_similar_features_by_decoder_direction():
    sae = SparseAutoencoder(6, 6, INFO, "topk", k=2, labels=LABELS)
    g = _gen(7)
    w = torch.randn(6, 6, generator=g)
    w[3] = w[0] * 5 + torch.randn(6, generator=g) * 0.05   # same direction, different norm
    w[4] = -w[0]                                             # opposite direction
    with torch.no_grad():
        sae.W_dec.copy_(w)
    found = similar_features(sae, "happy mood", top=6)
    assert found[0].index == 3 and found[0].score > 0.99
    assert found[-1] == (4, "formal tone", pytest.approx(-1.0, abs=1e-6))
    assert 0 not in {m.index for m in found} and len(found) == 5
    assert similar_features(sae, 0, top=1) == found[:1]
    with pytest.raises(SteeringError, match="no feature labelled"):
        similar_features(sae, "nonexistent")
