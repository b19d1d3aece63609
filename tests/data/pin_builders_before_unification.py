"""Computes tests/data/builders-before-unification.safetensors with the pre-unification builders (commit cdebad0).

Kept for provenance: it imports functions the unified harvest replaced, so it only runs at that commit.
"""
# ruff: noqa: E402, E501, F401, I001, T201
import torch
from safetensors.torch import save_file
import polysteer as ps
from polysteer.plugin.manager import create_plugin_manager  # noqa
out = {}
# text
from polysteer.plugins.text.testing import tiny_text_adapter
from polysteer.plugins.text.concepts import ConceptSpec, build_concept, harvest_tokens
from polysteer.plugins.text.classify import text_activations
t = tiny_text_adapter("llama")
for method in ("mean-diff", "pca"):
    spec = ConceptSpec(name="happy", site="blocks.1.resid_post", method=method,
                       positive=["the cat is happy", "a good day", "very happy friend"],
                       negative=["the cat is sad", "a bad day", "very sad friend"])
    d = build_concept(t, spec)
    out[f"text.{method}.vector"] = d.directions[0] * d.scales[0]
    out[f"text.{method}.site_norm"] = torch.tensor(d.info.site_norm)
texts = ["the cat", "the cat sat on the mat", "a good day to you all"]
h = harvest_tokens(t, texts, ["blocks.0.resid_post"], batch_size=2)
out["text.harvest_tokens"] = torch.cat(h["blocks.0.resid_post"])
out["text.text_activations"] = torch.cat(text_activations(t, texts, "blocks.0.resid_post", batch_size=2))
# image
from polysteer.plugins.image.adapter import DiffusersAdapter
from polysteer.plugins.image.testing import tiny_avatar_pipeline
from polysteer.plugins.image import concepts as ic
from polysteer.plugins.image import sae as isae
a = DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar")
for method in ("mean-diff", "pca"):
    d = ic.condition_concept(a, "sunglasses", "mid", {"glasses": "sunglasses"}, {"glasses": "none"},
                             samples=4, steps=3, method=method, window=(0.3, 1.0))
    out[f"image.condition.{method}.vector"] = d.directions[0] * d.scales[0]
    out[f"image.condition.{method}.scale"] = d.scales.clone()
    out[f"image.condition.{method}.site_norm"] = torch.tensor(d.info.site_norm)
d = ic.condition_concept(a, "sunglasses", "mid", {"glasses": "sunglasses"}, {"glasses": "none"},
                         samples=4, steps=3, region={"top": 0.0, "bottom": 0.5, "left": 0.0, "right": 1.0})
out["image.condition.region.vector"] = d.directions[0] * d.scales[0]
d = ic.measured_concept(a, "bright", "up.0", "brightness", samples=8, steps=3)
out["image.measured.vector"] = d.directions[0] * d.scales[0]
out["image.measured.site_norm"] = torch.tensor(d.info.site_norm)
g = torch.Generator().manual_seed(0)
light = (0.9 + 0.05 * torch.randn(3, 3, 16, 16, generator=g)).clamp(0, 1)
dark = (0.1 + 0.05 * torch.randn(3, 3, 16, 16, generator=g)).clamp(0, 1)
out["image.folder.light"], out["image.folder.dark"] = light, dark
p, n1 = ic.encode_images(a, light, "down.1", steps=4, window=(0.0, 0.5))
q, _ = ic.encode_images(a, dark, "down.1", steps=4, window=(0.0, 0.5))
out["image.folder.vector"] = p.mean(0) - q.mean(0)
out["image.folder.site_norm"] = torch.tensor(n1)
hv = isae.harvest(a, "mid", images=6, batch=4, steps=4, at=(0.0, 1.0), progress=False,
                  measures=lambda x: {"brightness": x.mean(dim=(1, 2, 3))})
out["image.sae.acts"] = hv.acts
out["image.sae.brightness"] = hv.measures["brightness"]
# voice
from polysteer.plugins.voice.testing import tiny_vits_adapter
from polysteer.plugins.voice import features as vf
from polysteer.plugins.voice import sae as vsae
v = tiny_vits_adapter()
inputs = [{"phonemes": "həlˈoʊ"}, {"phonemes": "ðɪs ɪz ɐ tˈɛst"}, {"phonemes": "wʌn tuː θɹiː"}]
hv = vf.harvest(v, inputs, ["text_encoder.layers.1", "duration_predictor.input"], progress=False)
w, r = vf.probe_direction(hv.acts["text_encoder.layers.1"], hv.centroid)
out["voice.probe.brightness"] = w
w, r = vf.probe_direction(hv.acts["duration_predictor.input"], hv.log_duration)
out["voice.probe.rate"] = w
out["voice.acts"] = torch.cat(hv.acts["text_encoder.layers.1"])
out["voice.pitch"] = torch.cat(hv.pitch)
out["voice.centroid"] = torch.cat(hv.centroid)
out["voice.log_duration"] = torch.cat(hv.log_duration)
frames, values = vsae.harvest_frames(v, inputs[:2], seeds=(0, 1), progress=False)
out["voice.frames"] = frames
for k, x in values.items():
    out[f"voice.frames.{k}"] = x
save_file({k: x.contiguous().float() for k, x in out.items()}, "tests/data/builders-before-unification.safetensors")
print({k: tuple(x.shape) for k, x in out.items()})
