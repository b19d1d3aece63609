"""The voice plugin: text-to-speech (Piper VITS voices) and speech recognition (Whisper).

It registers the ``vits`` adapter (the embedded ``en_US-joe-medium`` Piper voice run as a torch
module, or any VITS/MMS folder; :mod:`~polysteer.plugins.voice.tts`), the ``whisper`` adapter
(tiny.en embedded, or any transformers Whisper folder; :mod:`~polysteer.plugins.voice.whisper`),
the ``speak`` and ``transcribe`` commands and their parts of ``polysteer generate``, and measures
of generated speech for ``polysteer run`` experiments: pitch,
spectral centroid, loudness, flatness (:mod:`~polysteer.plugins.voice.measures`) and the Whisper
word error rate ``voice_wer``. Heavy libraries are imported only when used, so the plugin
registers (and ``polysteer plugins`` lists the install that fixes it) without them. See
``docs/voice.md`` and ``docs/whisper.md``.
"""

from __future__ import annotations

from pathlib import Path

from polysteer import hookimpl
from polysteer.plugins.voice import whisper
from polysteer.plugins.voice.measures import VOICE_MEASURES
from polysteer.plugins.voice.requirements import MEASURES_REQUIRE

SHIPPED = Path(__file__).parent / "shipped"
"""Files this plugin ships: the joe voice's probe and SAE dictionaries."""


@hookimpl
def polysteer_register_shipped_folders(registry):
    registry.register("voice", SHIPPED, description="the joe voice's probe and SAE dictionaries")


@hookimpl
def polysteer_register_measures(registry):
    for name, measure in VOICE_MEASURES.items():
        registry.register(name, measure, requires=MEASURES_REQUIRE)
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
def polysteer_register_renderers(registry):
    from polysteer.plugins.voice.harvest import SpeechRenderer
    from polysteer.plugins.voice.requirements import TTS_REQUIRES

    registry.register("speech", SpeechRenderer, requires=TTS_REQUIRES)


@hookimpl
def polysteer_register_row_selectors(registry):
    from polysteer.plugins.voice.harvest import voice_frames, voice_positions

    registry.register("voice-positions", voice_positions)
    registry.register("voice-frames", voice_frames)


@hookimpl
def polysteer_register_attributes(registry):
    from polysteer.plugins.voice.harvest import frame_measure, phoneme_measure

    registry.register("phoneme-measure", phoneme_measure, requires=MEASURES_REQUIRE)
    registry.register("frame-measure", frame_measure, requires=MEASURES_REQUIRE)


@hookimpl
def polysteer_register_commands(registry):
    from polysteer.plugins.voice import tts

    tts.register_commands(registry)  # speak


@hookimpl
def polysteer_register_generate_extensions(registry):
    from polysteer.plugins.voice.commands import SPEECH_GENERATION, TRANSCRIPTION_GENERATION
    from polysteer.plugins.voice.requirements import ASR_REQUIRES, TTS_REQUIRES

    registry.register("vits", SPEECH_GENERATION, requires=TTS_REQUIRES)
    registry.register("whisper", TRANSCRIPTION_GENERATION, requires=ASR_REQUIRES)


@hookimpl
def polysteer_register_artifacts(registry):
    from polysteer.plugins.voice import piper, whisper_models

    for item in [*piper.artifacts(), *whisper_models.artifacts()]:  # joe, whisper-tiny-en
        registry.register(item.name, item, description=item.description)


@hookimpl
def polysteer_register_effect_measures(registry):
    from polysteer.plugins.voice.sae import VOICE_EFFECT

    registry.register("voice-acoustics", VOICE_EFFECT, description=VOICE_EFFECT.description,
                      requires=MEASURES_REQUIRE)


@hookimpl
def polysteer_register_calibration_judges(registry):
    from polysteer.plugins.voice.evaluation import VoiceCalibrationJudge

    registry.register("voice", VoiceCalibrationJudge.from_spec,
                      description="polysteer calibrate on voice models")
