"""The voice plugin: speech measures, today; Piper VITS and Whisper adapters, next.

Today it registers measures of generated speech (waveforms ``(B, T)`` at the adapter's
``sample_rate``) for ``polysteer run`` experiments: ``voice_pitch_median`` and
``voice_pitch_range`` (F0 in Hz over voiced frames), ``voice_centroid`` (spectral centroid in Hz,
"bright/crisp"), ``voice_loudness`` (BS.1770 loudness in LUFS) and ``voice_flatness`` (spectral
flatness, "noisy/breathy"); see :mod:`polysteer.plugins.voice.measures`. They need torchaudio,
which is imported only when a measure runs, so the plugin registers (and ``polysteer plugins``
lists the install that fixes it) without torchaudio.

Coming: a Piper VITS adapter (the embedded ``en_US-joe-medium`` voice, run as a torch module) and
a Whisper adapter (tiny.en), which is also the intelligibility judge (word error rate) for TTS.
"""

from __future__ import annotations

from polysteer import Requirement, hookimpl
from polysteer.plugins.voice import whisper
from polysteer.plugins.voice.measures import VOICE_MEASURES

VOICE_EXTRA = "pip install 'polysteer[voice]'"
REQUIRES = [Requirement("torchaudio", VOICE_EXTRA)]


@hookimpl
def polysteer_register_measures(registry):
    for name, measure in VOICE_MEASURES.items():
        registry.register(name, measure, requires=REQUIRES)
    whisper.register_measures(registry)  # voice_wer (Whisper word error rate)


@hookimpl
def polysteer_register_adapters(registry):
    from polysteer.plugins.voice import tts

    tts.register_adapters(registry)  # vits (Piper voices, VITS/MMS folders)
    whisper.register_adapters(registry)  # whisper (tiny.en embedded, transformers folders)


@hookimpl
def polysteer_register_config_schemas(registry):
    from polysteer.plugins.voice import tts

    tts.register_config_schemas(registry)
    whisper.register_config_schemas(registry)


@hookimpl
def polysteer_register_commands(registry):
    from polysteer.plugins.voice import tts

    tts.register_commands(registry)  # speak
