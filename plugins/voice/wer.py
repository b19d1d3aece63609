"""Word error rate, and transcription with the embedded Whisper: the intelligibility judge for speech.

``word_error_rate(reference, hypothesis)`` is ``(substitutions + deletions + insertions) / words in
the reference``, from a word-level Levenshtein alignment after normalising both sides the same
way: Unicode NFKC, lower case, curly apostrophes made straight, every character that is not a
letter, digit or an apostrophe inside a word becomes a space. Numbers are compared as written
("5" and "five" differ), as are spellings ("colour" and "color"). A list of pairs gives the corpus
rate: all errors over all reference words (not the mean of per-sentence rates). The result is a
fraction: 0.05 is "5 points".

``transcribe(waveforms, sample_rate)`` runs the embedded Whisper tiny.en (converted on first use)
on waveforms at any sample rate; the ``voice_wer`` measure compares a TTS adapter's output with
the texts it was asked to say (both read from the generation record).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import torch

from polysteer import Generation

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NOT_WORD = re.compile(r"[^\w']+|_")
_EDGE_QUOTES = re.compile(r"^'+|'+$")


def normalise(text: str) -> list[str]:
    """The words of ``text`` as WER compares them (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    words = (_EDGE_QUOTES.sub("", w) for w in _NOT_WORD.sub(" ", text).split())
    return [w for w in words if w]


def word_edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """The fewest word substitutions, deletions and insertions turning ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """WER of one hypothesis against one reference, or corpus WER over paired lists.

    Raises ``ValueError`` when the lists differ in length or the reference has no words (WER is
    undefined then).
    """
    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses: pass one per reference")
    pairs = [(normalise(r), normalise(h)) for r, h in zip(refs, hyps, strict=True)]
    words = sum(len(r) for r, _ in pairs)
    if words == 0:
        raise ValueError("the reference has no words, so the word error rate is undefined")
    return sum(word_edits(r, h) for r, h in pairs) / words


@functools.lru_cache(maxsize=2)
def judge(name: str = "whisper-tiny-en") -> Any:
    """The Whisper adapter used for transcription, loaded once per process."""
    from polysteer.plugins.voice.whisper_adapter import WhisperAdapter

    return WhisperAdapter.load(name)


def transcribe(waveforms: Any, sample_rate: int, *, model: str = "whisper-tiny-en",
               max_new_tokens: int = 96, batch_size: int = 8) -> list[str]:
    """Transcripts of mono waveforms (``(B, T)``, ``(T,)`` or a list of 1-D tensors) at ``sample_rate``.

    Audio is resampled to 16 kHz with torchaudio; each waveform must be at most 30 s. ``model`` is
    an embedded Whisper name or a transformers Whisper folder.
    """
    if isinstance(waveforms, list | tuple):
        rows = list(waveforms)
    else:
        x = torch.as_tensor(waveforms)
        rows = list(x) if x.dim() == 2 else [x]
    adapter = judge(model)
    texts: list[str] = []
    for start in range(0, len(rows), batch_size):
        texts += adapter.transcribe(rows[start:start + batch_size], sample_rate=sample_rate,
                                    max_new_tokens=max_new_tokens)
    return texts


def voice_wer(generation: Generation, baseline: Generation | None = None) -> float:
    """Measure: corpus WER of Whisper's transcripts of a TTS generation against the texts it was
    asked to say (``generation.texts``), a fraction (0.05 = 5 points)."""
    texts = generation.texts
    if not texts:
        raise ValueError(f"voice_wer needs the texts the voice was asked to say, and this "
                         f"{generation.modality} generation has none (phoneme or id inputs have no "
                         "words); generate from text, or set Generation.texts in run_generation")
    from polysteer.plugins.voice.measures import generation_sample_rate

    return word_error_rate(list(texts), transcribe(generation.rows(), generation_sample_rate(generation)))
