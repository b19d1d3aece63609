"""The VITS adapter: Piper voices and transformers VITS/MMS checkpoints, steered in one pass.

VITS makes a whole utterance in one forward pass, so a generation is a single ``single`` step
covering every position. Positions are phonemes at the text-encoder and duration-predictor sites
and output frames (hop 256 samples at 22.05 kHz for Piper) at the flow and decoder sites, so
"along the utterance" is the position axis: the core ``span`` mask (``positions: {kind: span,
start: 0.66}``) steers only the last third of what is said.

Sites (forward order), each presented as ``(B, positions, channels)``:

=============================  ========================  ======================================
site                           positions                 what it is
=============================  ========================  ======================================
``text_encoder.layers.N``      phonemes                  output of encoder layer N
``text_encoder.project``       phonemes                  prior means and log-scales (acoustics
                                                         only: durations do not read it)
``duration_predictor.input``   phonemes                  what the duration predictor reads
``flow.N``                     frames                    output of the N-th coupling layer run
``decoder.input``              frames                    latent frames the vocoder turns to audio
``decoder.conv_pre``           frames                    the vocoder's first convolution
``decoder.upsample.N``         frames x upsampling       output of upsampling block N
=============================  ========================  ======================================
"""

from __future__ import annotations

import os
import wave
from pathlib import Path
from typing import Any, Literal

import torch

from polysteer import (
    BCT,
    BPC,
    Generation,
    Layout,
    MaybeTuple,
    ModelAdapter,
    RowMap,
    Site,
    SiteTable,
    Style,
)
from polysteer.io import atomic_path
from polysteer.plugins.voice.phonemes import phonemes_to_ids, phonemize
from polysteer.plugins.voice.vits import load_vits_folder, synthesize


class VitsAdapter(ModelAdapter):
    """Adapter for a VITS ``nn.Module`` (transformers ``VitsModel`` layout).

    ``generate(inputs, seed=0, noise_scale=None, noise_w=None, length_scale=None)`` takes text
    (one string or a list; phonemised with espeak-ng), ``{"phonemes": str | list[str]}`` (IPA,
    no espeak needed), ``{"ids": ...}`` or an id tensor ``(B, P)``. It returns a
    :class:`~polysteer.Generation`: waveforms ``(B, T)`` at :attr:`sample_rate`, zero past each
    row's ``lengths`` (samples); ``durations`` ``(B, P)`` output frames per input symbol, ``frames``
    ``(B,)`` output frames per row, ``texts`` what was said (None for phoneme or id inputs), and
    ``extras``: ``ids`` ``(B, P)`` the symbol ids, ``phonemes`` ``(B, P)`` bool, which symbols are
    phonemes (None without a Piper phoneme map), ``hop_length`` samples per output frame.
    """

    modality = "voice"

    def __init__(self, model: torch.nn.Module, name: str, *, phoneme_id_map: dict | None = None,
                 espeak_voice: str = "en-us", sample_rate: int | None = None,
                 noise_scale: float | None = None, noise_w: float | None = None,
                 length_scale: float | None = None, tokenizer: Any = None):
        super().__init__(model, name)
        config = model.config
        self.phoneme_id_map = phoneme_id_map
        self.espeak_voice = espeak_voice
        self.tokenizer = tokenizer
        self.sample_rate = int(sample_rate or config.sampling_rate)
        self.noise_scale = float(config.noise_scale if noise_scale is None else noise_scale)
        self.noise_w = float(config.noise_scale_duration if noise_w is None else noise_w)
        self.length_scale = float(1.0 / config.speaking_rate if length_scale is None else length_scale)
        self.hop = int(torch.tensor(config.upsample_rates).prod())
        self._phoneme_ids_set = _letter_ids(phoneme_id_map) if phoneme_id_map else None

    @classmethod
    def load(cls, name_or_path: str = "joe", device: str = "cpu", **options: Any) -> VitsAdapter:
        """An embedded voice (``joe``, converted on first use) or a VITS folder (Piper-converted or
        transformers/MMS with its tokenizer)."""
        from polysteer.plugins.voice.piper import EMBEDDED_VOICES, install_voice

        if name_or_path in EMBEDDED_VOICES:
            folder = install_voice(name_or_path)
        else:
            folder = Path(os.fspath(name_or_path)).expanduser()
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{folder} is not a VITS folder (no config.json); pass an "
                                        f"embedded voice ({', '.join(EMBEDDED_VOICES)}) or a folder")
        model, extra = load_vits_folder(folder)
        tokenizer = None
        if not extra and (folder / "vocab.json").is_file():
            from transformers import VitsTokenizer

            tokenizer = VitsTokenizer.from_pretrained(folder)
        model.to(device)
        settings = {"phoneme_id_map": extra.get("phoneme_id_map"),
                    "espeak_voice": extra.get("espeak_voice", "en-us"),
                    "sample_rate": extra.get("sample_rate"), "noise_scale": extra.get("noise_scale"),
                    "noise_w": extra.get("noise_w"), "length_scale": extra.get("length_scale")}
        settings.update({k: v for k, v in options.items() if v is not None})
        return cls(model, folder.name.removeprefix("piper-"), tokenizer=tokenizer, **settings)

    # -- sites ----------------------------------------------------------------------------------
    def site_table(self) -> SiteTable:
        """The sites of the module docstring's table; paths are relative to the ``VitsModel``."""
        m, config = self.model, self.model.config

        def site(path: str, layout: Layout, channels: int,
                 hook: Literal["input", "output"] = "output") -> Site:
            # duration predictor and decoder take their activation as ``inputs``
            return Site(path, layout, int(channels), hook=hook, arg_name="inputs")

        rows = [(f"text_encoder.layers.{i}",
                 site(f"text_encoder.encoder.layers.{i}", MaybeTuple(BPC()), config.hidden_size))
                for i in range(len(m.text_encoder.encoder.layers))]
        rows.append(("text_encoder.project", site("text_encoder.project", BCT(), 2 * config.flow_size)))
        rows.append(("duration_predictor.input",
                     site("duration_predictor", BCT(), config.hidden_size, "input")))
        flows = len(m.flow.flows)
        rows += [(f"flow.{k}", site(f"flow.flows.{flows - 1 - k}", MaybeTuple(BCT()), config.flow_size))
                 for k in range(flows)]  # synthesis runs the flows in reverse: flow.0 is the last one
        rows.append(("decoder.input", site("decoder", BCT(), config.flow_size, "input")))
        rows.append(("decoder.conv_pre", site("decoder.conv_pre", BCT(), config.upsample_initial_channel)))
        rows += [(f"decoder.upsample.{i}", site(f"decoder.upsampler.{i}", BCT(), up.out_channels))
                 for i, up in enumerate(m.decoder.upsampler)]
        return SiteTable(rows, owner=f"VITS voice {self.name}")

    # -- inputs ---------------------------------------------------------------------------------
    def encode(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids (B, P), lengths (B,))`` from text, ``{"phonemes": ...}``, ``{"ids": ...}`` or ids."""
        if isinstance(inputs, dict) and "phonemes" in inputs:
            rows = [self._phoneme_ids(p) for p in _as_list(inputs["phonemes"])]
        elif isinstance(inputs, dict) and "ids" in inputs:
            rows = [list(map(int, r)) for r in _id_rows(inputs["ids"])]
        elif isinstance(inputs, torch.Tensor):
            ids = inputs if inputs.dim() == 2 else inputs.unsqueeze(0)
            return ids.long(), torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long)
        else:
            rows = [self._text_ids(t) for t in _as_list(inputs)]
        if not rows or any(len(r) == 0 for r in rows):
            raise ValueError("nothing to say: an input has no phonemes")
        lengths = torch.tensor([len(r) for r in rows])
        ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids, lengths

    def _phoneme_ids(self, phonemes: str) -> list[int]:
        if self.phoneme_id_map is None:
            raise ValueError(f"voice {self.name} has no phoneme map (not a Piper voice); pass text")
        return phonemes_to_ids(phonemes, self.phoneme_id_map)

    def _text_ids(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"expected text (str), {{'phonemes': ...}} or ids, got {type(text).__name__}")
        if self.tokenizer is not None:
            return self.tokenizer(text)["input_ids"]
        return self._phoneme_ids(phonemize(text, self.espeak_voice))

    def prepare_inputs(self, spec: Any) -> Any:
        if spec is None:
            return ["The weather is lovely today.", "Could you pass me the salt, please?"]
        return spec

    # -- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def run_generation(self, inputs: Any, seed: int = 0, noise_scale: float | None = None,
                       noise_w: float | None = None, length_scale: float | None = None) -> Generation:
        """One pass (a ``single`` step over every position): waveforms ``(B, T)`` and their record."""
        ids, lengths = self.encode(inputs)
        device = next(self.model.parameters()).device
        self.begin_generation(1)
        self.advance_step(phase="single", new=0, rows=RowMap.plain(ids.shape[0]))
        generator = torch.Generator(device=device).manual_seed(int(seed))
        ids = ids.to(device)
        speech = synthesize(
            self.model, ids, lengths.to(device),
            noise_scale=self.noise_scale if noise_scale is None else noise_scale,
            noise_scale_duration=self.noise_w if noise_w is None else noise_w,
            length_scale=self.length_scale if length_scale is None else length_scale,
            generator=generator)
        phonemes = None
        if self._phoneme_ids_set is not None:
            phonemes = torch.isin(ids, self._phoneme_ids_set.to(device)) & (speech.durations > 0)
        return Generation(outputs=speech.waveform, modality=self.modality, model=self.name,
                          lengths=speech.lengths.cpu(), texts=_texts(inputs), sample_rate=self.sample_rate,
                          durations=speech.durations, frames=speech.frames.cpu(),
                          extras={"ids": ids, "phonemes": phonemes, "hop_length": self.hop})

    def style_from_example(self, examples: Any, neutral: Any = None, *, name: str = "from-example"
                           ) -> Style:
        """A style that makes this voice sound like the recordings ``examples`` (WAV paths): see
        :mod:`polysteer.plugins.voice.from_example` (used by :func:`polysteer.style_from_example`)."""
        from polysteer.plugins.voice.from_example import voice_style_from_example

        return voice_style_from_example(self, examples, neutral, name=name)

    def speaking_rate(self, generation: Generation) -> torch.Tensor:
        """Phonemes per second of each row of ``generation``, from predicted durations (pad,
        start/end, space, punctuation and stress symbols take time but are not counted)."""
        from polysteer.plugins.voice.measures import generation_speaking_rate

        return generation_speaking_rate(generation)

    # -- outputs --------------------------------------------------------------------------------
    def waveforms(self, generation: Generation) -> list[torch.Tensor]:
        """Each row of ``generation`` cut to its length."""
        return generation.rows()

    def describe_outputs(self, generation: Generation) -> list[str]:
        return [f"{len(w) / self.sample_rate:.2f} s of speech at {self.sample_rate} Hz"
                for w in self.waveforms(generation)]

    def save_outputs(self, generation: Generation, stem: Path) -> list[Path]:
        paths = []
        for i, w in enumerate(self.waveforms(generation)):
            path = stem.with_name(f"{stem.name}{'' if len(generation) == 1 else f'-{i}'}.wav")
            write_wav(path, w, self.sample_rate)
            paths.append(path)
        return paths


def write_wav(path: Path, waveform: torch.Tensor, sample_rate: int) -> Path:
    """Write a mono float waveform in [-1, 1] as 16-bit PCM WAV, atomically."""
    pcm = (waveform.detach().float().clamp(-1, 1) * 32767).round().to(torch.int16).cpu().numpy()
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return path


def _letter_ids(id_map: dict) -> torch.Tensor:
    """Ids of the symbols that are phonemes (IPA letters), not pads, stress or punctuation."""
    import unicodedata

    return torch.tensor(sorted({i for sym, ids in id_map.items() if len(sym) == 1
                                and unicodedata.category(sym) in ("Ll", "Lu", "Lo") for i in ids}))


def _texts(inputs: Any) -> list[str] | None:
    """The texts of text inputs (None for phonemes or ids, which have no words to compare)."""
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, list | tuple) and inputs and all(isinstance(t, str) for t in inputs):
        return list(inputs)
    return None


def _as_list(value: Any) -> list:
    return [value] if isinstance(value, str) else list(value)


def _id_rows(ids: Any) -> list:
    if isinstance(ids, torch.Tensor):
        return ids.tolist() if ids.dim() == 2 else [ids.tolist()]
    ids = list(ids)
    return ids if ids and isinstance(ids[0], list | tuple | torch.Tensor) else [ids]
