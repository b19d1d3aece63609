"""The voice calibration judge (``polysteer calibrate`` on a TTS model).

Concept score: the judge spec's prosody profile (``voice.profile``, e.g. ``{pitch: 1, rate: 1}``;
+1 = the concept raises the measure) read on held-out sentences: the mean over the profile's measures
of ``sign x (steered / unsteered - 1)``, median F0 for ``pitch``, spectral centroid for
``brightness``, phonemes per second for ``rate`` (0 unsteered; 0.1 = the profile moved 10% its way).
Coherence: Whisper's word error rate on the sentences (:mod:`polysteer.plugins.voice.wer`), bound the
unsteered WER + :data:`WER_MARGIN`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from polysteer import Generation

WER_MARGIN = 0.15
"""Most word error rate a calibrated voice may add to the unsteered one."""
MEASURES = ("pitch", "brightness", "rate")


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


class VoiceCalibrationJudge:
    """Speaks held-out sentences and measures prosody against the profile and intelligibility."""

    score_name = "profile change"
    coherence_name = "Whisper WER"
    grid = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)

    def __init__(self, adapter: Any, spec: dict[str, Any], *, sentences: Sequence[str] | None = None,
                 inputs: Any = None, asr: Callable[[list, int], list[str]] | None = None):
        from polysteer.plugins.voice.features import HELD_OUT

        self.name = str(spec.get("name", "concept"))
        self.profile = {str(k): float(v) for k, v in spec["voice"]["profile"].items()}
        unknown = set(self.profile) - set(MEASURES)
        if unknown:
            raise ValueError(f"judge {self.name!r}: voice.profile: unknown {sorted(unknown)}; use {MEASURES}")
        self.sentences = list(sentences if sentences is not None else HELD_OUT)
        self.inputs = inputs if inputs is not None else list(self.sentences)
        self.asr = asr
        self._base: tuple[int, dict[str, list[float]]] | None = None

    @classmethod
    def from_spec(cls, adapter: Any, spec: dict[str, Any]) -> VoiceCalibrationJudge:
        """The registered factory."""
        return cls(adapter, spec)

    def generate(self, adapter: Any) -> Generation:
        """The sentences (or the given ``inputs``: phonemes, ids) spoken with seed 0."""
        return adapter.generate(self.inputs, seed=0)

    def _prosody(self, adapter: Any, generation: Generation) -> dict[str, list[float]]:
        from polysteer.plugins.voice.features import F0_RANGE
        from polysteer.plugins.voice.measures import generation_speaking_rate, pitch, spectral_centroid

        rate = adapter.sample_rate
        waves = generation.rows()
        return {"pitch": [pitch(w, rate, **F0_RANGE).median.item() for w in waves],
                "brightness": [spectral_centroid(w, rate).item() for w in waves],
                "rate": generation_speaking_rate(generation).tolist()}

    def _wer(self, adapter: Any, generation: Generation) -> float:
        from polysteer.plugins.voice.wer import transcribe, word_error_rate

        heard = (self.asr or (lambda w, r: transcribe(w, r)))(generation.rows(), adapter.sample_rate)
        return word_error_rate(self.sentences, list(heard))

    def measure(self, adapter: Any, generation: Generation, baseline: Generation | None) -> dict[str, Any]:
        """Profile change (0 for the baseline), WER and the raw measures."""
        now = self._prosody(adapter, generation)
        out: dict[str, Any] = {f"{k}_mean": _mean(v) for k, v in now.items()}
        out["coherence"] = self._wer(adapter, generation)
        if baseline is None:
            out["score"] = 0.0
            self._base = None
            return out
        if self._base is None or self._base[0] != id(baseline):
            self._base = (id(baseline), self._prosody(adapter, baseline))
        base = self._base[1]
        changes = []
        for key, sign in self.profile.items():
            rel = [a / b - 1.0 for a, b in zip(now[key], base[key], strict=True)
                   if math.isfinite(a) and math.isfinite(b) and b > 0]
            changes.append(sign * _mean(rel))
        out["score"] = _mean(changes) if changes else math.nan
        return out

    def bound(self, baseline: dict[str, Any]) -> float:
        """Unsteered WER + :data:`WER_MARGIN`."""
        return float(baseline["coherence"]) + WER_MARGIN

    def describe(self) -> dict[str, Any]:
        """What the judge is."""
        return {"kind": "voice", "spec": self.name, "profile": self.profile,
                "sentences": self.sentences, "bound": f"unsteered Whisper WER + {WER_MARGIN}"}
