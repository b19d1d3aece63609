"""The Whisper adapter: transformers' ``WhisperForConditionalGeneration``, steered frame by frame
in the encoder and token by token in the decoder.

Sites are ``encoder.layers.N.KIND`` (positions = the encoder's audio frames, 20 ms each, 1500 for
Whisper's fixed 30 s window; audio shorter than 30 s is padded with silence) and
``decoder.layers.N.KIND`` (positions = tokens). KIND is ``resid_pre``, ``attn_out``, ``mlp_out``,
``resid_post`` and, in the decoder, ``cross_out`` (what attending to the audio adds). Every site
is ``(batch, positions, d_model)``.

The step clock: the encoder runs once, as step 0 (phase ``prefill``: every frame is new and is
the "prompt", progress 0); then the decoder's prefill of its forced prefix
(``<|startoftranscript|><|notimestamps|>``; phase ``prefill``, progress 0) and one ``decode``
step per further token, progress rising to 1 at ``max_new_tokens``. Decoder offsets count tokens
from 0, so under the KV cache each decode step shows one new token at the right position and
every step is steered.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch

from polysteer import (
    BPC,
    Generation,
    MaybeTuple,
    ModelAdapter,
    RowMap,
    Site,
    SiteTable,
)
from polysteer.io import atomic_path
from polysteer.plugins.voice.measures import as_waveforms
from polysteer.plugins.voice.whisper_models import SAMPLE_RATE, load_whisper
from polysteer.steering import Layout, token_lengths

#: Site kinds per stack, in the order they are computed inside one layer.
SITE_KINDS: dict[str, tuple[str, ...]] = {
    "encoder": ("resid_pre", "attn_out", "mlp_out", "resid_post"),
    "decoder": ("resid_pre", "attn_out", "cross_out", "mlp_out", "resid_post"),
}
# kind -> (module under the layer ("" = the layer), hook, layout)
_BINDINGS: dict[str, tuple[str, Literal["input", "output"], Layout]] = {
    "resid_pre": ("", "input", BPC()),
    "attn_out": ("self_attn", "output", MaybeTuple(BPC())),
    "cross_out": ("encoder_attn", "output", MaybeTuple(BPC())),
    "mlp_out": ("fc2", "output", BPC()),
    "resid_post": ("", "output", MaybeTuple(BPC())),
}

Audio = torch.Tensor | list[Any] | dict[str, torch.Tensor]
"""Waveforms ``(B, T)`` / ``(T,)`` or a list of 1-D waveforms, or ``{"input_features": ...}``."""


class WhisperAdapter(ModelAdapter):
    """Adapter for a transformers Whisper model and its processor.

    ``generate(audio, sample_rate=16000, max_new_tokens=96)`` transcribes waveforms (any sample
    rate: they are resampled to 16 kHz) and returns a :class:`~polysteer.Generation`: token ids
    ``(batch, tokens)`` as ``outputs``, the transcripts as ``texts``, ``lengths`` each row's tokens
    up to end-of-text, and ``extras["audio_seconds"]`` ``(B,)`` the length of each input.
    :meth:`transcribe` returns the transcripts alone.
    """

    modality = "asr"
    sample_rate = SAMPLE_RATE

    def __init__(self, model: Any, processor: Any, name: str):
        super().__init__(model, name)
        self.processor = processor

    @classmethod
    def load(cls, name_or_path: str = "whisper-tiny-en", dtype: str = "float32",
             device: str = "cpu") -> WhisperAdapter:
        """Load the embedded ``whisper-tiny-en`` (converted on first use) or a local folder."""
        model, processor = load_whisper(name_or_path, dtype=dtype, device=device)
        return cls(model, processor, Path(str(name_or_path)).name)

    # -- sites ----------------------------------------------------------------------------------
    def site_table(self) -> SiteTable:
        """``encoder.layers.N.KIND`` then ``decoder.layers.N.KIND`` (see :data:`SITE_KINDS`);
        paths are relative to the ``WhisperForConditionalGeneration``."""
        d_model = self.model.config.d_model
        rows = []
        for stack, kinds in SITE_KINDS.items():
            for i in range(len(getattr(self.model.model, stack).layers)):
                layer = f"model.{stack}.layers.{i}"
                for kind in kinds:
                    sub, hook, layout = _BINDINGS[kind]
                    rows.append((f"{stack}.layers.{i}.{kind}",
                                 Site(f"{layer}.{sub}" if sub else layer, layout, d_model, hook=hook)))
        return SiteTable(rows, owner=f"Whisper model {self.name}")

    # -- inputs ---------------------------------------------------------------------------------
    def features(self, audio: Audio, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Log-mel features ``(B, mels, frames)`` of waveforms at ``sample_rate`` Hz.

        ``audio`` is ``(B, T)``, ``(T,)`` or a list of 1-D waveforms, float in [-1, 1] or int16 PCM.
        """
        if isinstance(audio, dict):
            return audio["input_features"]
        items = audio if isinstance(audio, list | tuple) else [audio]
        waves = [w for item in items for w in as_waveforms(torch.as_tensor(item).detach().cpu())]
        if sample_rate != SAMPLE_RATE:
            import torchaudio

            waves = [torchaudio.functional.resample(w, sample_rate, SAMPLE_RATE) for w in waves]
        extractor = self.processor.feature_extractor
        limit = extractor.n_samples
        if too_long := [i for i, w in enumerate(waves) if w.numel() > limit]:
            raise ValueError(f"waveforms {too_long} are longer than Whisper's window of "
                             f"{limit / SAMPLE_RATE:g} s; split them into shorter pieces")
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        out = extractor([w.numpy() for w in waves], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return out.input_features.to(device, dtype)

    def prepare_inputs(self, spec: Any) -> Any:
        """``experiment.inputs`` for Whisper: a WAV file path or a list of them (16 kHz waveforms)."""
        if spec is None:
            raise ValueError("a Whisper experiment needs audio: set experiment.inputs to WAV file paths")
        paths = [spec] if isinstance(spec, str | Path) else list(spec)
        if not all(isinstance(p, str | Path) for p in paths):
            return spec  # already waveforms
        waves = []
        for path in paths:
            wave_, rate = read_wav(path)
            if rate != SAMPLE_RATE:
                import torchaudio

                wave_ = torchaudio.functional.resample(wave_, rate, SAMPLE_RATE)
            waves.append(wave_)
        return waves

    # -- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def run_generation(self, inputs: Audio, sample_rate: int = SAMPLE_RATE, max_new_tokens: int | None = None,
                       **kwargs: Any) -> Generation:
        """Greedy (or beam, ``num_beams=``) transcription with the step clock attached.

        ``max_new_tokens`` defaults to 96 (at most half the decoder's positions); generation stops
        earlier at the end-of-text token, and decode progress counts towards ``max_new_tokens``.
        """
        if max_new_tokens is None:
            max_new_tokens = min(96, self.model.config.max_target_positions // 2)
        feats = self.features(inputs, sample_rate)
        samples, beams = feats.shape[0], int(kwargs.get("num_beams", 1))
        handles = []
        if self.attached_clocks:
            self.begin_generation(max_new_tokens + 1)  # the encoder pass, then the decoder's
            rows = RowMap.beams(samples, beams) if beams > 1 else RowMap.plain(samples)
            handles = [
                self.model.model.encoder.register_forward_pre_hook(self.scoped(self._encoder_clock()),
                                                                   with_kwargs=True),
                self.model.model.decoder.register_forward_pre_hook(
                    self.scoped(self._decoder_clock(rows, max_new_tokens)), with_kwargs=True)]
        try:
            with _quiet_generate():
                out = self.model.generate(input_features=feats, max_new_tokens=max_new_tokens, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        if not isinstance(out, torch.Tensor):  # return_dict_in_generate=True
            out = out["sequences"]
        return Generation(outputs=out, modality=self.modality, model=self.name,
                          lengths=token_lengths(out, 0, self.model.generation_config.eos_token_id),
                          texts=self._decode(out), extras={"audio_seconds": _seconds(inputs, sample_rate)})

    @torch.no_grad()
    def encode(self, inputs: Audio, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """The encoder alone (one ``single`` step): its output ``(B, frames, d_model)``.

        A cheap way to harvest encoder-site activations for probes on audio, without decoding.
        """
        feats = self.features(inputs, sample_rate)
        self.begin_generation(1)
        frames = _frames(self.model.model.encoder, feats)
        self.advance_step(phase="single", new=frames, prompt_length=frames, rows=RowMap.plain(feats.shape[0]))
        try:
            return self.model.model.encoder(feats).last_hidden_state
        finally:
            for clock in self.attached_clocks:  # the next pass is not this one's
                clock.current = None

    def _encoder_clock(self):
        def hook(module, args, kwargs):
            feats = kwargs.get("input_features", args[0] if args else None)
            frames = _frames(module, feats)
            self.advance_step(phase="prefill", offset=0, new=frames, prompt_length=frames,
                              rows=RowMap.plain(feats.shape[0]), progress=0.0)
        return hook

    def _decoder_clock(self, rows: RowMap, max_new_tokens: int):
        state = {"calls": 0, "prompt": 0}

        def hook(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            positions = ids.shape[1] if ids is not None else kwargs["inputs_embeds"].shape[1]
            calls = state["calls"]
            if calls == 0:
                state["prompt"] = positions
                self.advance_step(phase="prefill", offset=0, new=positions, prompt_length=positions,
                                  rows=rows, progress=0.0)
            else:  # under a cache one new token; without one the whole sequence again
                self.advance_step(phase="decode", offset=state["prompt"] + calls - positions, new=1,
                                  prompt_length=state["prompt"], rows=rows,
                                  progress=min(1.0, calls / max(1, max_new_tokens - 1)))
            state["calls"] += 1
        return hook

    # -- outputs --------------------------------------------------------------------------------
    def _decode(self, ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def texts(self, generation: Generation | torch.Tensor) -> list[str]:
        """Each row's transcript, special tokens removed (``generation.texts``; token ids are
        decoded)."""
        if not isinstance(generation, Generation):
            return self._decode(generation)
        return list(generation.texts) if generation.texts is not None else self._decode(generation.outputs)

    def transcribe(self, audio: Audio, sample_rate: int = SAMPLE_RATE, **kwargs: Any) -> list[str]:
        """Transcripts of waveforms at ``sample_rate``; ``kwargs`` go to :meth:`generate`."""
        return self.texts(self.generate(audio, sample_rate=sample_rate, **kwargs))

    def transcribe_long(self, audio: torch.Tensor, sample_rate: int = SAMPLE_RATE, *, batch_size: int = 8,
                        progress: bool = False, **kwargs: Any) -> str:
        """The transcript of one waveform ``(T,)`` of any length: cut into pieces that fit Whisper's
        30 s window (each cut at the quietest moment of the window's last 5 s, so words are seldom
        split), transcribed in batches and joined. ``kwargs`` go to :meth:`generate`;
        ``max_new_tokens`` defaults to half the decoder's positions (224 for Whisper), room for a
        full window of fast speech."""
        from tqdm.auto import tqdm

        wave_ = torch.as_tensor(audio).flatten()
        window = self.processor.feature_extractor.n_samples * sample_rate // SAMPLE_RATE
        pieces = quiet_cuts(wave_, window, search=5 * sample_rate, frame=sample_rate // 50)
        kwargs.setdefault("max_new_tokens", self.model.config.max_target_positions // 2)
        texts: list[str] = []
        starts = range(0, len(pieces), batch_size)
        for start in tqdm(starts, desc="transcribing", unit="batch", disable=not progress or len(starts) < 2):
            texts += self.transcribe(pieces[start:start + batch_size], sample_rate=sample_rate, **kwargs)
        return " ".join(t for t in texts if t)

    def describe_outputs(self, generation: Generation) -> list[str]:
        return self.texts(generation)

    def save_outputs(self, generation: Generation, stem: Path) -> list[Path]:
        path = stem.with_name(stem.name + ".txt")
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(self.texts(generation)) + "\n")
        return [path]


def quiet_cuts(wave_: torch.Tensor, window: int, search: int, frame: int) -> list[torch.Tensor]:
    """``wave_`` cut into consecutive pieces of at most ``window`` samples, each cut placed at the
    start of the lowest-energy ``frame`` within the last ``search`` samples of the window (at most
    half of it)."""
    pieces, start, search = [], 0, min(search, window // 2)  # every piece is at least half a window
    frame = max(1, min(frame, search))
    while len(wave_) - start > window:
        tail = wave_[start + window - search:start + window]
        energy = tail[:len(tail) // frame * frame].reshape(-1, frame).pow(2).mean(1)
        quietest = len(energy) - 1 - int(energy.flip(0).argmin())  # the latest, if several tie
        cut = start + window - search + quietest * frame
        pieces.append(wave_[start:cut])
        start = cut
    pieces.append(wave_[start:])
    return pieces


def _seconds(audio: Audio, sample_rate: int) -> torch.Tensor | None:
    """``(B,)`` seconds of each input waveform; None for precomputed features."""
    if isinstance(audio, dict):
        return None
    items = audio if isinstance(audio, list | tuple) else [audio]
    counts = [w.shape[-1] for item in items for w in as_waveforms(torch.as_tensor(item))]
    return torch.tensor(counts, dtype=torch.float32) / sample_rate


def _frames(encoder: torch.nn.Module, feats: torch.Tensor) -> int:
    """Encoder positions for mel features: the two convolutions' strides shorten the time axis."""
    return feats.shape[-1] // (encoder.conv1.stride[0] * encoder.conv2.stride[0])


@contextmanager
def _quiet_generate() -> Iterator[None]:
    """Hide transformers' generate warnings that Whisper's own ``generate`` triggers on every call
    (``max_length`` and ``max_new_tokens`` both set, no attention mask for batched audio)."""
    log = logging.getLogger("transformers.generation.utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def read_wav(path: str | Path) -> tuple[torch.Tensor, int]:
    """A PCM WAV file as a mono float waveform ``(T,)`` in [-1, 1] and its sample rate."""
    import numpy as np

    try:
        with wave.open(str(path), "rb") as handle:
            width, channels, rate = handle.getsampwidth(), handle.getnchannels(), handle.getframerate()
            raw = handle.readframes(handle.getnframes())
    except (wave.Error, EOFError) as err:
        raise ValueError(f"{path} is not a PCM WAV file ({err}); convert it, e.g. with "
                         "`ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`") from err
    dtypes = {1: (np.uint8, 128.0, 128.0), 2: (np.int16, 0.0, 32768.0), 4: (np.int32, 0.0, 2.0 ** 31)}
    if width not in dtypes:
        raise ValueError(f"{path} has {8 * width}-bit samples; polysteer reads 8, 16 and 32-bit PCM WAV")
    dtype, offset, scale = dtypes[width]
    samples = (np.frombuffer(raw, dtype=dtype).astype(np.float32) - offset) / scale
    return torch.from_numpy(samples.reshape(-1, channels).mean(axis=1)), rate
