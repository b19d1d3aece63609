"""VITS as a torch module: transformers' ``VitsModel`` plus the HiFi-GAN variant Piper voices use.

Piper voices (and the original VITS "resblock 2" configs) use a lighter HiFi-GAN residual block
than transformers' (one dilated convolution per dilation instead of two): :class:`ResBlock2`
implements it, and :func:`build_vits` swaps it in when ``config.resblock_type == "2"``. Everything
else is transformers' ``VitsModel`` unchanged, so MMS and other VITS checkpoints (resblock type 1)
load through the same code.

:func:`synthesize` runs inference stage by stage (text encoder, duration predictor, flow, decoder)
instead of ``VitsModel.forward`` so the adapter can return the predicted durations (speaking rate)
and seed the two noise draws per call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polysteer.data import check_readback, manifest_of

_DROP_PREFIXES = ("posterior_encoder.", "duration_predictor.post_")
"""Training-only parts of ``VitsModel``; inference never runs them, so they are not stored."""


class ResBlock2(nn.Module):
    """HiFi-GAN residual block, type 2: ``x = x + conv_d(leaky_relu(x))`` for each dilation ``d``."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], slope: float = 0.1):
        super().__init__()
        self.slope = slope
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size - 1) * d // 2)
            for d in dilations)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            hidden_states = hidden_states + conv(nn.functional.leaky_relu(hidden_states, self.slope))
        return hidden_states


def _plain_weights(model: nn.Module) -> None:
    """Fold weight-norm parametrisations into plain weights (inference form, as exported)."""
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def build_vits(config: Any) -> nn.Module:
    """An inference-ready ``VitsModel`` for ``config`` (a ``VitsConfig``), random weights.

    ``config.resblock_type`` ``"2"`` swaps the decoder's residual blocks for :class:`ResBlock2`;
    the training-only posterior encoders are removed.
    """
    from transformers import VitsModel

    model = VitsModel(config)
    if str(getattr(config, "resblock_type", "1")) == "2":
        decoder = model.decoder
        blocks = []
        for i in range(len(decoder.upsampler)):
            channels = config.upsample_initial_channel // (2 ** (i + 1))
            for kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes,
                                         strict=True):
                blocks.append(ResBlock2(channels, kernel, list(dilations), config.leaky_relu_slope))
        decoder.resblocks = nn.ModuleList(blocks)
    del model.posterior_encoder
    dp = model.duration_predictor
    for name in [n for n, _ in dp.named_children() if n.startswith("post_")]:
        delattr(dp, name)
    _plain_weights(model)
    return model.eval()


def inference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict that inference needs (what the cache stores)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(_DROP_PREFIXES)}


def load_vits_folder(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, extra)`` from a folder with ``config.json`` and ``model.safetensors``.

    Works for polysteer's converted Piper voices and for transformers VITS folders (MMS):
    weight-norm and training-only tensors in the latter are folded or ignored.
    """
    from safetensors.torch import load_file
    from transformers import VitsConfig

    config = VitsConfig.from_pretrained(folder)
    manifest = manifest_of(folder)
    if manifest is not None:
        name = str(manifest.get("name", folder))
        voice = name.removeprefix("piper-")
        check_readback(manifest, name=name, folder=folder, config=config,
                       fix=f"convert it again with this transformers (install_voice({voice!r}, "
                           f"force=True) or 'polysteer models install {voice} --force')")
    model = build_vits(config)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{folder} has no *.safetensors weights; a VITS folder needs "
                                "config.json and model.safetensors")
    state: dict[str, torch.Tensor] = {}
    for path in weights:
        state.update(load_file(str(path)))
    state = _fold_weight_norm(state)
    wanted = inference_state(model)
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise KeyError(f"{folder}: weights missing for {missing[:5]} ({len(missing)} in all); is it "
                       "a VITS checkpoint for this config?")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    extra_path = folder / "polysteer-voice.json"
    extra = json.loads(extra_path.read_text()) if extra_path.is_file() else {}
    return model, extra


def _fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn ``...weight_g``/``weight_v`` or ``parametrizations.weight.original0/1`` into ``weight``."""
    out = dict(state)
    pairs = ((".weight_g", ".weight_v"),
             (".parametrizations.weight.original0", ".parametrizations.weight.original1"))
    for key in state:
        for g_suffix, v_suffix in pairs:
            if key.endswith(g_suffix):
                stem = key[: -len(g_suffix)]
                g, v = state[key], state[stem + v_suffix]
                dims = tuple(range(1, v.dim()))
                out[stem + ".weight"] = v * (g / v.norm(dim=dims, keepdim=True))
                out.pop(key)
                out.pop(stem + v_suffix)
    return out


@dataclass
class Synthesis:
    """One batch of speech: waveforms ``(B, T)`` (zero past each length) and what made them."""

    waveform: torch.Tensor  # (B, T) float in [-1, 1]
    lengths: torch.Tensor  # (B,) samples
    durations: torch.Tensor  # (B, P) frames per phoneme (0 on padding)
    frames: torch.Tensor  # (B,) output frames per row


def _expand(values: torch.Tensor, durations: torch.Tensor, frames: int) -> torch.Tensor:
    """Repeat each phoneme's column ``durations`` times along time: (B, C, P) -> (B, C, frames)."""
    ends = durations.cumsum(-1)  # (B, P)
    t = torch.arange(frames, device=values.device, dtype=ends.dtype)
    starts = ends - durations
    path = ((t[None, :, None] >= starts[:, None, :]) & (t[None, :, None] < ends[:, None, :]))
    return torch.matmul(path.to(values.dtype), values.transpose(1, 2)).transpose(1, 2)


@torch.no_grad()
def synthesize(model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor, *, noise_scale: float,
               noise_scale_duration: float, length_scale: float, generator: torch.Generator | None = None
               ) -> Synthesis:
    """VITS inference on phoneme ids ``(B, P)`` with ``lengths`` ``(B,)``.

    The same computation as ``VitsModel.forward`` (and Piper's ONNX graph) with explicit noise
    scales; both noise draws come from ``generator`` (the global RNG if None), so a seed gives
    the same speech every time. Scales of 0 make synthesis deterministic.
    """
    device = ids.device
    mask = (torch.arange(ids.shape[1], device=device)[None] < lengths[:, None]).float()  # (B, P)
    enc = model.text_encoder(input_ids=ids, padding_mask=mask.unsqueeze(-1), attention_mask=mask.long(),
                             return_dict=True)
    hidden = enc.last_hidden_state.transpose(1, 2)  # (B, C, P)
    mask_bct = mask.unsqueeze(1)
    log_duration = _durations(model, hidden, mask_bct, noise_scale_duration, generator)
    durations = torch.ceil(torch.exp(log_duration) * mask_bct * length_scale).squeeze(1)  # (B, P)
    frames = durations.sum(-1).clamp_min(1).long()
    out_mask = (torch.arange(int(frames.max()), device=device)[None] < frames[:, None]).float()
    means = _expand(enc.prior_means.transpose(1, 2), durations, int(frames.max()))
    log_var = _expand(enc.prior_log_variances.transpose(1, 2), durations, int(frames.max()))
    noise = torch.randn(means.shape, generator=generator, device=device, dtype=means.dtype)
    latents = means + noise * torch.exp(log_var) * noise_scale
    out_mask = out_mask.unsqueeze(1)
    latents = model.flow(latents, out_mask, None, reverse=True)
    waveform = model.decoder(latents * out_mask, None).squeeze(1)
    hop = waveform.shape[-1] // latents.shape[-1]
    samples = frames * hop
    keep = torch.arange(waveform.shape[-1], device=device)[None] < samples[:, None]
    return Synthesis(waveform * keep, samples, durations * mask, frames)


def _durations(model: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, noise_scale: float,
               generator: torch.Generator | None) -> torch.Tensor:
    """Log durations ``(B, 1, P)``; the stochastic predictor's noise comes from ``generator``."""
    dp = model.duration_predictor
    if not model.config.use_stochastic_duration_prediction:
        return dp(hidden, mask, None)
    with torch.random.fork_rng(devices=[]):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
        if seed is not None:
            torch.manual_seed(seed)
        return dp(hidden, mask, None, reverse=True, noise_scale=noise_scale)
