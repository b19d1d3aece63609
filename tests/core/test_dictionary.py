"""Feature dictionaries: the encode/decode protocol, files, feature names and model checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from polysteer.errors import CorruptFileError, DictionaryMismatchError, SteeringError
from polysteer.features import dictionary as dictionary_module
from polysteer.features.dictionary import DictionaryInfo, DirectionSet, SparseAutoencoder, load_dictionary
from polysteer.features.fingerprint import fingerprint
from polysteer.io import fileio
from polysteer.models.reference import ReferenceConfig, ReferenceLM

SITE = "blocks.1.resid_post"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model_fp():
    return fingerprint(ReferenceLM(), "reference")


def _info(model_fp=None, **kw) -> DictionaryInfo:
    return DictionaryInfo(model=model_fp, site=kw.pop("site", SITE), site_norm=kw.pop("site_norm", 4.0),
                          method=kw.pop("method", "diff-of-means"),
                          details=kw.pop("details", {"pairs": 12, "note": "test"}))


def _directions(model_fp=None, d_in: int = 32) -> DirectionSet:
    raw = torch.randn(3, d_in, generator=_gen(1)) * torch.tensor([[1.0], [2.0], [5.0]])
    return DirectionSet(raw, _info(model_fp), ["happy", "sad", "formal"], torch.tensor([1.5, 2.0, 3.0]))


def _sae(model_fp=None, activation: str = "topk", k: int | None = 3, d_in: int = 32,
         d_features: int = 16) -> SparseAutoencoder:
    torch.manual_seed(3)
    sae = SparseAutoencoder(d_in, d_features, _info(model_fp, method=f"sae-{activation}"),
                            activation=activation, k=k)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(d_features, generator=_gen(4)) * 0.1)
        sae.b_dec.copy_(torch.randn(d_in, generator=_gen(5)) * 0.1)
        sae.threshold.copy_(torch.rand(d_features, generator=_gen(6)) * 0.5)
        sae.feature_scale.copy_(torch.rand(d_features, generator=_gen(7)) + 0.5)
    return sae


# -- direction sets ------------------------------------------------------------------------------
def test_direction_set_units_scales_and_protocol():
    d = _directions()
    assert torch.allclose(d.directions.norm(dim=1), torch.ones(3), atol=1e-6)
    assert d.d_in == 32 and d.d_features == 3
    assert d.scales.tolist() == [1.5, 2.0, 3.0]
    x = torch.randn(2, 5, 32, generator=_gen(2))
    f = d.encode(x)
    assert f.shape == (2, 5, 3)
    assert torch.allclose(f, x @ d.directions.T)
    assert torch.allclose(d.decode(f), f @ d.directions)
    # a feature's own direction reads as 1 on itself
    assert torch.allclose(d.encode(d.directions)[torch.arange(3), torch.arange(3)], torch.ones(3))
    assert d.decode(f).shape == x.shape


def test_direction_set_default_scale_is_site_norm_and_1d_input():
    d = DirectionSet(torch.tensor([3.0, 4.0]), _info(site_norm=7.0))
    assert d.d_features == 1 and d.labels == ["feature 0"]
    assert torch.allclose(d.directions, torch.tensor([[0.6, 0.8]]))
    assert d.scales.tolist() == [7.0]


@pytest.mark.parametrize("bad", [torch.zeros(2, 4), torch.tensor([[1.0, float("nan"), 0.0, 0.0]])])
def test_direction_set_rejects_zero_or_non_finite(bad):
    with pytest.raises(ValueError, match="finite and non-zero"):
        DirectionSet(bad, _info())


def test_direction_set_label_count_must_match():
    with pytest.raises(ValueError, match="2 labels for 3 features"):
        DirectionSet(torch.randn(3, 4), _info(), ["a", "b"])


# -- sparse autoencoders -------------------------------------------------------------------------
def test_topk_keeps_exactly_k_non_negative_features():
    sae = _sae(activation="topk", k=3)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)  # every pre-activation positive: exactly k survive
    x = torch.randn(4, 7, 32, generator=_gen(8))
    f = sae.encode(x)
    assert f.shape == (4, 7, 16)
    assert ((f != 0).sum(-1) == 3).all()
    assert (f >= 0).all()
    pre = sae.pre_activation(x)
    kept = pre.topk(3, dim=-1).indices
    assert torch.equal(f.gather(-1, kept), pre.gather(-1, kept))


def test_topk_never_keeps_more_than_k_and_no_negatives():
    sae = _sae(activation="topk", k=5)
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)  # all pre-activations negative: nothing fires
    f = sae.encode(torch.randn(3, 32, generator=_gen(9)))
    assert (f == 0).all()
    sae = _sae(activation="topk", k=5)
    f = sae.encode(torch.randn(50, 32, generator=_gen(10)))
    assert ((f != 0).sum(-1) <= 5).all() and (f >= 0).all()


def test_jumprelu_zeroes_below_threshold_and_keeps_value_above():
    sae = _sae(activation="jumprelu", k=None)
    x = torch.randn(6, 32, generator=_gen(11))
    pre = sae.pre_activation(x)
    f = sae.encode(x)
    above = pre > sae.threshold
    assert torch.equal(f[above], pre[above])
    assert (f[~above] == 0).all()
    assert above.any() and (~above).any()
    assert sae.threshold.requires_grad


def test_relu_is_relu_of_pre_activation():
    sae = _sae(activation="relu", k=None)
    x = torch.randn(6, 32, generator=_gen(12))
    assert torch.equal(sae.encode(x), torch.relu(sae.pre_activation(x)))
    assert not sae.threshold.requires_grad


@pytest.mark.parametrize("activation", ["topk", "jumprelu", "relu"])
def test_sae_decode_of_encode_shapes_and_linearity(activation):
    sae = _sae(activation=activation, k=4 if activation == "topk" else None)
    x = torch.randn(2, 3, 32, generator=_gen(13))
    f = sae.encode(x)
    assert f.shape == (2, 3, 16)
    x_hat = sae.decode(f)
    assert x_hat.shape == x.shape
    assert torch.allclose(x_hat, f @ sae.W_dec + sae.b_dec, atol=1e-6)
    assert torch.allclose(sae.directions.norm(dim=1), torch.ones(16), atol=1e-6)
    assert sae.d_in == 32 and sae.d_features == 16


@pytest.mark.parametrize(("activation", "k"), [("gelu", None), ("topk", None), ("topk", 0), ("topk", 17)])
def test_sae_bad_architecture_errors(activation, k):
    with pytest.raises(ValueError):
        SparseAutoencoder(32, 16, _info(), activation=activation, k=k)


# -- files ---------------------------------------------------------------------------------------
def _assert_same(a, b):
    assert type(a) is type(b)
    assert a.labels == b.labels
    assert a.info == b.info
    assert a.info.model is None or a.info.model.matches(b.info.model)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def test_direction_set_save_load_round_trip_is_exact(tmp_path, model_fp):
    d = _directions(model_fp)
    out = d.save(tmp_path / "dicts" / "mood")
    assert out == tmp_path / "dicts" / "mood"
    assert sorted(p.name for p in out.iterdir()) == ["dictionary.json", "dictionary.safetensors"]
    loaded = load_dictionary(out)
    _assert_same(d, loaded)
    assert loaded.info.details == {"pairs": 12, "note": "test"}
    assert loaded.info.model == model_fp
    x = torch.randn(4, 32, generator=_gen(14))
    assert torch.equal(loaded.encode(x), d.encode(x))


@pytest.mark.parametrize(("activation", "k"), [("topk", 3), ("jumprelu", None), ("relu", None)])
def test_sae_save_load_round_trip_is_exact(tmp_path, model_fp, activation, k):
    sae = _sae(model_fp, activation=activation, k=k)
    loaded = load_dictionary(sae.save(tmp_path / "sae"))
    _assert_same(sae, loaded)
    assert (loaded.activation, loaded.k) == (activation, k)
    x = torch.randn(4, 32, generator=_gen(15))
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert torch.equal(loaded.decode(sae.encode(x)), sae.decode(sae.encode(x)))


def test_saving_is_json_and_safetensors_only(tmp_path):
    out = _directions().save(tmp_path / "d")
    meta = json.loads((out / "dictionary.json").read_text())
    assert meta["kind"] == "directions" and meta["labels"] == ["happy", "sad", "formal"]
    assert meta["info"]["site"] == SITE
    assert (out / "dictionary.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_save_replaces_an_existing_folder_and_leaves_no_temp_folders(tmp_path):
    target = tmp_path / "d"
    _sae(activation="relu", k=None).save(target)
    (target / "stale.txt").write_text("from an older save")
    _directions().save(target)
    # the replaced folder is a link to its one live version (atomic for readers); nothing else
    assert [n for n in _listing(tmp_path) if not n.startswith(".d.v-")] == ["d"]
    assert _listing(tmp_path) == sorted(["d", os.readlink(target)])
    _directions().save(target)
    assert _listing(tmp_path) == sorted(["d", os.readlink(target)]), "the replaced version is removed"
    assert _listing(target) == ["dictionary.json", "dictionary.safetensors"]
    assert isinstance(load_dictionary(target), DirectionSet)


def test_failed_save_keeps_the_old_folder_intact(tmp_path, monkeypatch):
    target = tmp_path / "d"
    _directions().save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    old = load_dictionary(target)

    def broken_write_json(path, data):
        path.write_text('{"half": ')  # a partial write, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(dictionary_module, "write_json", broken_write_json)
    with pytest.raises(OSError, match="No space"):
        _sae(activation="relu", k=None).save(target)
    assert _listing(tmp_path) == ["d"]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    _assert_same(old, load_dictionary(target))


def test_failed_swap_keeps_the_old_folder_in_place(tmp_path, monkeypatch):
    """Even if moving the new folder into place fails, the old dictionary stays where it was."""
    target = tmp_path / "d"
    _directions().save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real_replace = os.replace

    def flaky_replace(src, dst):
        if Path(dst) == target:
            raise OSError("simulated failure while swapping folders")
        return real_replace(src, dst)

    def flaky_exchange(a, b):
        raise OSError("simulated failure while swapping folders")

    monkeypatch.setattr(os, "replace", flaky_replace)
    monkeypatch.setattr(fileio, "_exchange", flaky_exchange)
    with pytest.raises(OSError, match="simulated"):
        _sae(activation="relu", k=None).save(target)
    monkeypatch.undo()
    assert target.is_dir(), "the old dictionary folder was lost"
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert _listing(tmp_path) == ["d"]


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    def broken_write_tensors(path, tensors, metadata=None):
        raise OSError("disk gone")

    monkeypatch.setattr(dictionary_module, "write_tensors", broken_write_tensors)
    with pytest.raises(OSError):
        _directions().save(tmp_path / "d")
    assert _listing(tmp_path) == []


def test_truncated_safetensors_is_a_corrupt_file_error_naming_the_file(tmp_path):
    out = _directions().save(tmp_path / "d")
    tensors = out / "dictionary.safetensors"
    data = tensors.read_bytes()
    tensors.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError) as info:
        load_dictionary(out)
    assert str(tensors) in str(info.value)


def test_garbage_safetensors_is_a_corrupt_file_error(tmp_path):
    out = _directions().save(tmp_path / "d")
    (out / "dictionary.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(CorruptFileError, match="dictionary.safetensors"):
        load_dictionary(out)


def test_truncated_json_is_a_corrupt_file_error_naming_the_file(tmp_path):
    out = _directions().save(tmp_path / "d")
    meta = out / "dictionary.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(CorruptFileError) as info:
        load_dictionary(out)
    assert str(meta) in str(info.value)


@pytest.mark.parametrize("content", [
    "[]", "null", '"a string"', '{"format": "polysteer-dictionary"}', '{"format": "something-else"}',
])
def test_json_of_the_wrong_shape_is_a_corrupt_file_error(tmp_path, content):
    out = _directions().save(tmp_path / "d")
    (out / "dictionary.json").write_text(content)
    with pytest.raises(CorruptFileError) as info:
        load_dictionary(out)
    assert str(out) in str(info.value)


def test_sae_tensors_of_the_wrong_shape_are_a_corrupt_file_error(tmp_path):
    out = _sae(activation="relu", k=None).save(tmp_path / "sae")
    meta = json.loads((out / "dictionary.json").read_text())
    meta["d_features"] = 8
    meta["labels"] = meta["labels"][:8]
    (out / "dictionary.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptFileError, match="sae"):
        load_dictionary(out)


def test_loading_a_folder_without_a_dictionary_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="dictionary.json"):
        load_dictionary(tmp_path)


# -- features by name ----------------------------------------------------------------------------
def test_feature_index_by_label_int_and_digit_string():
    d = _directions()
    assert d.feature_index("sad") == 1
    assert d.feature_index(2) == 2
    assert d.feature_index("0") == 0


def test_a_digit_label_wins_over_an_index():
    d = DirectionSet(torch.randn(3, 4, generator=_gen(0)), _info(), ["2", "x", "y"])
    assert d.feature_index("2") == 0
    assert d.feature_index(2) == 2


def test_misspelt_label_suggests_the_close_one():
    with pytest.raises(SteeringError, match="Did you mean 'formal'"):
        _directions().feature_index("fromal")


def test_unknown_label_lists_labels_when_nothing_is_close():
    with pytest.raises(SteeringError, match="happy"):
        _directions().feature_index("zzzzzz")


@pytest.mark.parametrize("bad", [3, -1, 99, "7", True])
def test_out_of_range_or_bad_feature_errors(bad):
    with pytest.raises(SteeringError):
        _directions().feature_index(bad)


# -- compatibility -------------------------------------------------------------------------------
def test_check_compatible_accepts_the_same_model(model_fp):
    d = _directions(model_fp)
    d.check_compatible(fingerprint(ReferenceLM(), "reference"), SITE, 32)
    d.check_compatible(None, SITE, 32)  # a caller that cannot fingerprint still checks site/channels
    _directions(None).check_compatible(model_fp, SITE, 32)  # a model-free dictionary


def test_check_compatible_rejects_wrong_site(model_fp):
    with pytest.raises(DictionaryMismatchError, match="blocks.0.resid_post"):
        _directions(model_fp).check_compatible(model_fp, "blocks.0.resid_post", 32)


def test_check_compatible_rejects_wrong_channels(model_fp):
    with pytest.raises(DictionaryMismatchError, match="64"):
        _directions(model_fp).check_compatible(model_fp, SITE, 64)


def test_check_compatible_rejects_another_seed(model_fp):
    other = fingerprint(ReferenceLM(ReferenceConfig(seed=1)), "reference")
    assert other.architecture == model_fp.architecture
    with pytest.raises(DictionaryMismatchError, match="rebuild"):
        _directions(model_fp).check_compatible(other, SITE, 32)
    with pytest.raises(DictionaryMismatchError):
        _sae(model_fp, activation="relu", k=None).check_compatible(other, SITE, 32)


def test_check_compatible_rejects_another_architecture(model_fp):
    other = fingerprint(ReferenceLM(ReferenceConfig(n_layers=3)), "reference")
    with pytest.raises(DictionaryMismatchError):
        _directions(model_fp).check_compatible(other, SITE, 32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_check_compatible_accepts_the_same_model_in_half_precision(model_fp, dtype):
    cast = fingerprint(ReferenceLM().to(dtype), "reference")
    _directions(model_fp).check_compatible(cast, SITE, 32)


def test_fingerprint_survives_the_json_round_trip(tmp_path, model_fp):
    loaded = load_dictionary(_directions(model_fp).save(tmp_path / "d"))
    loaded.check_compatible(fingerprint(ReferenceLM(), "reference"), SITE, 32)
    with pytest.raises(DictionaryMismatchError):
        loaded.check_compatible(fingerprint(ReferenceLM(ReferenceConfig(seed=2))), SITE, 32)
