"""A tiny WaveNet-style autoregressive model over "audio-like" frames, and its polysteer adapter.

The model is plain torch and deliberately not a transformer: a stack of gated, dilated, causal 1-D
convolutions whose activations are channels-first ``(batch, channels, time)``, and whose blocks
return a ``(residual, skip)`` tuple. It predicts the next frame of ``n_bins`` values (think of a
tiny spectrogram) from the frames so far, and generates by appending its prediction.

Like a transformer with a KV cache, it can stream: each causal convolution keeps the last few
frames it saw, so after the prompt ("prefill") a forward pass sees only the one new frame. The
adapter tells polysteer exactly that through the step clock, which is what keeps steering alive
after the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from polysteer import BCT, Generation, InTuple, ModelAdapter, RowMap, Site, SiteTable
from torch import nn


@dataclass
class WaveNetConfig:
    """Size of :class:`TinyWaveNet` (tiny by default: it runs in milliseconds on a CPU)."""

    n_bins: int = 8
    channels: int = 16
    n_blocks: int = 3
    kernel_size: int = 2
    max_frames: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_bins", "channels", "n_blocks", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.kernel_size < 2:
            # a kernel of 1 would look at no past frame: the model could not be autoregressive
            raise ValueError(f"kernel_size must be at least 2, got {self.kernel_size}")


@dataclass
class ExampleConvConfig(WaveNetConfig):
    """Config node ``model`` for ``kind: example-conv`` (checked by polysteer when it loads)."""

    kind: str = "example-conv"


class CausalConv1d(nn.Conv1d):
    """A dilated convolution that only looks back; with a cache it streams chunk by chunk.

    ``cache`` is a list that holds the last ``(kernel_size - 1) * dilation`` input frames between
    calls (empty before the first call), the convolutional analogue of a KV cache.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int):
        super().__init__(c_in, c_out, kernel_size, dilation=dilation)
        self.context = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        if cache:
            x = torch.cat([cache[0], x], dim=-1)
        else:  # first chunk (or no streaming): the past before the start is silence
            x = F.pad(x, (self.context, 0))
        if cache is not None:
            cache[:] = [x[..., x.shape[-1] - self.context:]]
        return super().forward(x)


class ResidualBlock(nn.Module):
    """WaveNet block: a gated dilated causal conv; returns ``(x + residual, skip)``, both BCT."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = CausalConv1d(channels, 2 * channels, kernel_size, dilation)
        self.res = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, cache: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.conv(x, cache).chunk(2, dim=1)
        h = torch.tanh(a) * torch.sigmoid(b)
        return x + self.res(h), self.skip(h)


class TinyWaveNet(nn.Module):
    """Frames ``(B, n_bins, T)`` -> predicted next frame at every time step ``(B, n_bins, T)``."""

    def __init__(self, config: WaveNetConfig | None = None):
        super().__init__()
        self.config = c = config or WaveNetConfig()
        # seeded in a forked RNG so building a model never disturbs the caller's random state
        with torch.random.fork_rng():
            torch.manual_seed(c.seed)
            self.embed = nn.Conv1d(c.n_bins, c.channels, 1)
            self.blocks = nn.ModuleList(ResidualBlock(c.channels, c.kernel_size, 2**i)
                                        for i in range(c.n_blocks))
            self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(c.channels, c.channels, 1), nn.ReLU(),
                                      nn.Conv1d(c.channels, c.n_bins, 1))
        self.eval()

    def forward(self, frames: torch.Tensor, caches: list[list] | None = None) -> torch.Tensor:
        """Predict the next frame after each of ``frames``; ``caches`` streams (one per block)."""
        x = self.embed(frames)
        skips = torch.zeros_like(x)
        for i, block in enumerate(self.blocks):
            x, skip = block(x, None if caches is None else caches[i])
            skips = skips + skip
        return torch.tanh(self.head(skips))


class ExampleConvAdapter(ModelAdapter):
    """Adapter for :class:`TinyWaveNet`: autoregressive frame generation, streaming, guidance.

    ``inputs`` is a ``(B, n_bins, T)`` float tensor of prompt frames (or nested lists of it).
    Sites, in forward order: ``embed``, ``blocks.N.residual``, ``blocks.N.skip`` and ``skips``
    (the summed skip connections entering the output head).
    """

    # a modality of its own: a style's "voice" realisations are dictionaries made on real voice
    # models, so they must be reported as not applicable here rather than tried and mismatched
    modality = "audio-frames"

    def __init__(self, model: TinyWaveNet | None = None, name: str = "example-conv"):
        super().__init__(model or TinyWaveNet(), name)

    def site_table(self) -> SiteTable:
        """Every site, in the order a forward pass reaches it: module path (relative to the model),
        hook point and native layout (all channels-first). ``sites()`` and ``bind()`` come from it."""
        channels = self.model.config.channels
        rows = [("embed", Site("embed", BCT(), channels))]
        for i in range(len(self.model.blocks)):
            # a block returns (residual, skip): the activation is one item of that tuple
            rows.append((f"blocks.{i}.residual", Site(f"blocks.{i}", InTuple(BCT(), 0), channels)))
            rows.append((f"blocks.{i}.skip", Site(f"blocks.{i}", InTuple(BCT(), 1), channels)))
        # the head is called with the summed skips as its only positional argument
        rows.append(("skips", Site("head", BCT(), channels, hook="input", arg_index=0)))
        return SiteTable(rows, owner=self.name)

    @torch.no_grad()
    def run_generation(self, inputs: Any, max_new_frames: int = 8, use_cache: bool = True,
                       guidance_scale: float | None = None) -> Generation:
        """Generate ``max_new_frames`` frames: a record whose outputs are
        ``(B, n_bins, T + max_new_frames)``, the prompt's ``T`` frames first (``prompt_length``).

        With ``guidance_scale`` the batch is doubled to ``[uncond; cond]`` rows (the unconditional
        prompt is silence) and each predicted frame is ``u + g * (c - u)``.
        """
        frames = self._frames(inputs)
        samples, _, prompt = frames.shape
        if prompt + max_new_frames > self.model.config.max_frames:
            raise ValueError(f"prompt ({prompt}) + max_new_frames ({max_new_frames}) exceeds "
                             f"max_frames={self.model.config.max_frames}")
        rows, batch = RowMap.plain(samples), frames
        if guidance_scale is not None:
            rows = RowMap.cfg(samples)
            batch = torch.cat([torch.zeros_like(frames), frames])
        self.begin_generation(max_new_frames)
        caches = [[] for _ in self.model.blocks] if use_cache else None
        out = frames
        for step in range(max_new_frames):
            if use_cache and step > 0:  # streaming: only the frame appended last step is new
                feed, offset = batch[..., -1:], batch.shape[-1] - 1
            else:
                feed, offset = batch, 0
            # one clock step per forward pass, announced before the pass so hooks see it
            self.advance_step(phase="prefill" if step == 0 else "decode", offset=offset,
                              new=prompt if step == 0 else 1, prompt_length=prompt, rows=rows)
            frame = self.model(feed, caches)[..., -1:]
            if guidance_scale is not None:
                uncond, cond = frame.chunk(2)
                frame = uncond + guidance_scale * (cond - uncond)
            out = torch.cat([out, frame], dim=-1)
            batch = torch.cat([batch, frame.repeat(batch.shape[0] // samples, 1, 1)], dim=-1)
        # the record carries what measures need, so nothing about this run stays on the adapter
        return Generation(outputs=out, modality=self.modality, model=self.name, prompt_length=prompt)

    def prepare_inputs(self, spec: Any) -> torch.Tensor:
        """``None`` -> two deterministic prompts; nested lists -> a frames tensor."""
        if spec is None:
            return example_frames(n_bins=self.model.config.n_bins)
        return self._frames(spec)

    def describe_outputs(self, generation: Generation) -> list[str]:
        """One line per sample: length, energy and spectral centroid (a raw dump is unreadable)."""
        frames = generation.outputs.float()
        energy = frames.pow(2).mean(dim=(1, 2))
        centroid = spectral_centroid(frames)
        return [f"{frames.shape[-1]} frames, energy {e:.3f}, centroid bin {c:.2f}"
                for e, c in zip(energy.tolist(), centroid.tolist(), strict=True)]

    def _frames(self, inputs: Any) -> torch.Tensor:
        """Inputs as a float ``(B, n_bins, T)`` tensor, with a clear error for anything else."""
        param = next(self.model.parameters())
        frames = torch.as_tensor(inputs, dtype=param.dtype, device=param.device)
        n_bins = self.model.config.n_bins
        if frames.ndim != 3 or frames.shape[1] != n_bins or frames.shape[2] < 1:
            raise ValueError(f"{self.name} takes frames shaped (batch, {n_bins}, time >= 1), "
                             f"got {tuple(frames.shape)}")
        return frames


def spectral_centroid(frames: torch.Tensor) -> torch.Tensor:
    """Per sample: the magnitude-weighted mean bin index of ``(B, n_bins, T)`` frames."""
    magnitude = frames.abs()
    bins = torch.arange(frames.shape[1], dtype=frames.dtype, device=frames.device)
    per_frame = (magnitude * bins[:, None]).sum(1) / magnitude.sum(1).clamp_min(1e-12)
    return per_frame.mean(dim=-1)


def example_frames(samples: int = 2, length: int = 6, n_bins: int = 8, seed: int = 0) -> torch.Tensor:
    """Deterministic prompt frames ``(samples, n_bins, length)`` with values in about [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(samples, n_bins, length, generator=g).mul(0.5).clamp(-1.0, 1.0)


def load_example_conv(options: dict[str, Any]) -> ExampleConvAdapter:
    """The tiny WaveNet-style example model (random weights, seeded)."""
    fields = {k: v for k, v in options.items() if k != "kind"}
    return ExampleConvAdapter(TinyWaveNet(WaveNetConfig(**fields)))
