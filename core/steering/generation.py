"""The record of one generation: what was generated, and what a measure needs to judge it.

``adapter.generate(...)`` returns a :class:`Generation` for every modality, in the spirit of
diffusers' ``BaseOutput`` and transformers' ``GenerateDecoderOnlyOutput``. Measures are pure
functions of ``(generation, baseline)``: everything they read (prompt length, per-row lengths,
texts, sample rate, durations, the step history) travels in the record, never on the adapter, so a
baseline's record stays true after a steered run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from polysteer.steering.step import Step


@dataclass(eq=False)
class Generation:
    """What one call of ``adapter.generate`` produced.

    One record type for every modality: the fields that several modalities share are typed
    attributes (``None`` where a model has no such thing), and what only one adapter knows goes in
    ``extras`` (documented by that adapter), so a new modality needs no new record class.

    Attributes:
        outputs: the batch of outputs, first axis = samples: token ids ``(B, T)`` (prompt
            included for language models), images ``(B, 3, H, W)`` float in [0, 1], waveforms
            ``(B, N)`` float in [-1, 1] (zero past each row's length).
        modality: the adapter's modality (``text``, ``image``, ``voice``, ``asr``...).
        model: the adapter's model name.
        prompt_length: leading positions along the last axis of ``outputs`` that are the prompt
            (token models: the padded prompt width; 0 where outputs hold no prompt).
        lengths: ``(B,)`` long, how many leading positions along the last axis of each row are
            real output (tokens up to and including end-of-sequence, prompt included; samples of
            audio); ``None`` when every row fills the last axis.
        texts: one string per sample where the generation has words: the decoded new text of a
            language model, the text a TTS voice was asked to say, a speech recogniser's transcript.
        sample_rate: Hz of audio outputs.
        durations: ``(B, P)`` model time units per input position where the model predicts them
            (a TTS model's frames per phoneme, 0 on padding).
        frames: ``(B,)`` the model's own time units per row (a TTS model's output frames).
        steps: the step history, one :class:`~polysteer.steering.step.Step` per forward pass (index, phase,
            progress, offset and new positions, row map), as the step clock saw it.
        extras: what only this adapter knows (e.g. ``vocab_size``, ``ids``, ``hop_length``, a
            seed); plain values or tensors, keyed by documented names.
    """

    outputs: torch.Tensor
    modality: str
    model: str = ""
    prompt_length: int = 0
    lengths: torch.Tensor | None = None
    texts: list[str] | None = None
    sample_rate: int | None = None
    durations: torch.Tensor | None = None
    frames: torch.Tensor | None = None
    steps: tuple[Step, ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        """The number of samples (rows of ``outputs``)."""
        return int(self.outputs.shape[0])

    @property
    def generated(self) -> torch.Tensor:
        """``outputs`` without the prompt along the last axis: the new tokens
        ``(B, T - prompt_length)`` of a language model."""
        return self.outputs[..., self.prompt_length:]

    @property
    def seconds(self) -> torch.Tensor:
        """``(B,)`` seconds of audio per row (needs ``sample_rate``)."""
        if self.sample_rate is None:
            raise ValueError(f"this {self.modality} generation has no sample_rate, so no duration in "
                             "seconds; an audio adapter sets Generation.sample_rate")
        return self.row_lengths().float() / self.sample_rate

    def row_lengths(self) -> torch.Tensor:
        """``(B,)`` real length of each row: ``lengths``, or the full last axis when that is None."""
        if self.lengths is not None:
            return self.lengths
        return torch.full((len(self),), self.outputs.shape[-1], dtype=torch.long)

    def rows(self) -> list[torch.Tensor]:
        """Each sample's output cut to its length (waveforms without their zero tail)."""
        if self.lengths is None:
            return list(self.outputs)
        return [self.outputs[i, ..., : int(n)] for i, n in enumerate(self.lengths.tolist())]

    def check(self) -> None:
        """Raise ``ValueError`` naming the field if the record is not self-consistent.

        Every per-sample field has one entry per row of ``outputs``; lengths lie within the last
        axis and are at least the prompt; step indices count up from 0.
        """
        if not isinstance(self.outputs, torch.Tensor) or self.outputs.dim() < 1:
            raise ValueError(f"Generation.outputs must be a tensor with a batch axis, got "
                             f"{type(self.outputs).__name__}")
        batch, width = len(self), self.outputs.shape[-1]
        if not 0 <= self.prompt_length <= width:
            raise ValueError(f"Generation.prompt_length {self.prompt_length} is outside 0..{width}")
        for name in ("lengths", "frames"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (batch,):
                raise ValueError(f"Generation.{name} has shape {tuple(value.shape)}, expected "
                                 f"({batch},): one per sample")
        if self.lengths is not None:
            low, high = int(self.lengths.min()), int(self.lengths.max())
            if low < self.prompt_length or high > width:
                raise ValueError(f"Generation.lengths span {low}..{high}, outside "
                                 f"{self.prompt_length}..{width} (prompt..last axis)")
        if self.durations is not None and self.durations.shape[0] != batch:
            raise ValueError(f"Generation.durations has {self.durations.shape[0]} rows for {batch} samples")
        if self.texts is not None and len(self.texts) != batch:
            raise ValueError(f"Generation.texts has {len(self.texts)} entries for {batch} samples")
        if self.sample_rate is not None and not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            raise ValueError(f"Generation.sample_rate must be a positive int (Hz), got {self.sample_rate!r}")
        indices = [s.index for s in self.steps]
        if indices != list(range(len(indices))):
            raise ValueError(f"Generation.steps indices {indices} do not count up from 0")


def as_generation(value: Any, *, modality: str = "other", model: str = "") -> Generation:
    """``value`` if it is a :class:`Generation`, else a record holding ``value`` as its outputs.

    Lets ``generate`` accept an adapter whose ``run_generation`` still returns a bare tensor (its
    record then has only outputs); measures that need more say what is missing.
    """
    if isinstance(value, Generation):
        return value
    return Generation(outputs=torch.as_tensor(value), modality=modality, model=model)


def token_lengths(ids: torch.Tensor, prompt_length: int, eos: int | list[int] | None) -> torch.Tensor:
    """``(B,)`` per-row length of token ids: up to and including the first end-of-sequence token
    after the prompt (the whole row when there is none, or no ``eos`` is given)."""
    width = ids.shape[-1]
    if eos is None or width == prompt_length:
        return torch.full((ids.shape[0],), width, dtype=torch.long)
    done = torch.isin(ids[:, prompt_length:], torch.as_tensor(eos, device=ids.device).flatten())
    # argmax finds the first True; a row without one keeps every position
    new = torch.where(done.any(-1), done.int().argmax(-1) + 1, done.shape[1])
    return (new + prompt_length).long().cpu()
