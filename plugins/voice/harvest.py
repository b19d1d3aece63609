"""The voice plugin's parts of the core harvest: how sentences are spoken, which rows are kept.

* renderer ``speech`` (:class:`SpeechRenderer`): synthesises each input (a sentence, or a
  ``{"phonemes": ...}`` dict) alone, with a fixed noise seed (so no padding effects); records the
  waveform, each phoneme's predicted duration (frames), the latent frame count and the audio
  length in samples;
* row selectors ``voice-positions`` (:func:`voice_positions`: every position of the utterance:
  phonemes at text-encoder and duration-predictor sites) and ``voice-frames``
  (:func:`voice_frames`: the utterance's latent frames, e.g. at ``decoder.input``);
* measured attributes ``phoneme-measure`` (F0 by YIN or spectral centroid, Hz, averaged over each
  phoneme's predicted frames, NaN where unvoiced; or the phoneme's log predicted duration) and
  ``frame-measure`` (F0, centroid, level, flatness per latent frame).
"""

from __future__ import annotations

from typing import Any

import torch

from polysteer.workflows import Attribute, Rendered, Rows, RowSelector

PHONEME_MEASURES = ("pitch", "centroid", "log_duration")
FRAME_MEASURES = ("pitch", "centroid", "level", "flatness")


class SpeechRenderer:
    """Renderer ``speech``: one utterance per batch, synthesised with noise seed ``seed``."""

    stop_early = False

    def __init__(self, seed: int = 0, **generate: Any):
        self.seed, self.generate = seed, generate

    def render(self, adapter: Any, rendered: Rendered) -> None:
        if len(rendered.inputs) != 1:
            raise ValueError("the speech renderer synthesises one utterance at a time (batch size 1), "
                             f"got {len(rendered.inputs)}")
        speech = adapter.generate(rendered.inputs[0], seed=self.seed, **self.generate)
        rendered.outputs = speech.outputs
        rendered.info.update(durations=speech.durations[0], frames=int(speech.frames[0]),
                             length=int(speech.lengths[0]))


def voice_positions() -> RowSelector:
    """Row selector ``voice-positions``: every position of the utterance (phonemes at text-encoder
    and duration-predictor sites)."""
    def select(acts: torch.Tensor, _rendered: Rendered) -> Rows:
        return Rows(acts[0], torch.zeros(acts.shape[1], dtype=torch.long))
    return select


def voice_frames() -> RowSelector:
    """Row selector ``voice-frames``: the utterance's latent frames (padding frames dropped)."""
    def select(acts: torch.Tensor, rendered: Rendered) -> Rows:
        rows = acts[0, :rendered.info["frames"]]
        return Rows(rows, torch.zeros(len(rows), dtype=torch.long))
    return select


def _wave(rendered: Rendered) -> torch.Tensor:
    return rendered.outputs[:, :rendered.info["length"]]


def _per_frame(rendered: Rendered) -> dict[str, torch.Tensor]:
    """Frame measures of the utterance, computed once per rendered batch."""
    if "frame_measures" not in rendered.info:
        from polysteer.plugins.voice.sae import frame_measures

        rendered.info["frame_measures"] = frame_measures(rendered.adapter, _wave(rendered),
                                                         rendered.info["frames"])
    return rendered.info["frame_measures"]


def phoneme_measure(measure: str) -> Attribute:
    """Measured attribute ``phoneme-measure``: ``measure`` (one of :data:`PHONEME_MEASURES`) of the
    phoneme each row is (the rows must be phonemes: one per predicted duration)."""
    if measure not in PHONEME_MEASURES:
        raise ValueError(f"phoneme measure {measure!r}: choose one of {PHONEME_MEASURES}")

    def attribute(rendered: Rendered, rows: Rows) -> torch.Tensor:
        from polysteer.plugins.voice.features import frame_measures, per_phoneme

        durations = rendered.info["durations"]
        if len(rows.rows) != len(durations):
            raise ValueError(f"phoneme-measure needs one row per phoneme ({len(durations)}), got "
                             f"{len(rows.rows)}: capture a text-encoder or duration-predictor site")
        if measure == "log_duration":
            return torch.log(durations.clamp_min(1))
        if "phoneme_frames" not in rendered.info:
            rendered.info["phoneme_frames"] = frame_measures(rendered.adapter, _wave(rendered),
                                                             rendered.info["frames"])
        pitch, bright = rendered.info["phoneme_frames"]
        return per_phoneme(pitch if measure == "pitch" else bright, durations)
    return attribute


def frame_measure(measure: str) -> Attribute:
    """Measured attribute ``frame-measure``: ``measure`` (one of :data:`FRAME_MEASURES`) of the
    latent frame each row is (selector ``voice-frames``)."""
    if measure not in FRAME_MEASURES:
        raise ValueError(f"frame measure {measure!r}: choose one of {FRAME_MEASURES}")

    def attribute(rendered: Rendered, rows: Rows) -> torch.Tensor:
        values = _per_frame(rendered)[measure]
        if len(values) != len(rows.rows):
            raise ValueError(f"frame-measure needs one row per latent frame ({len(values)}), got "
                             f"{len(rows.rows)}: use selector voice-frames at decoder.input")
        return values
    return attribute
