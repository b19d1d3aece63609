"""What the voice plugin registers for speech recognition: the ``whisper`` adapter, its config
and the ``voice_wer`` measure.

Kept apart from ``__init__`` so the plugin's hooks stay one line per registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polysteer.plugins.voice.requirements import ASR_REQUIRES


@dataclass
class WhisperModelConfig:
    """Config node ``model`` for ``kind: whisper``."""

    kind: str = "whisper"
    name: str = "whisper-tiny-en"  # the embedded model, or a transformers Whisper folder
    dtype: str | None = None  # None: --dtype / POLYSTEER_DTYPE, else float32
    device: str | None = None  # None: --device / POLYSTEER_DEVICE, else cpu


def load_whisper_adapter(node: dict[str, Any]):
    """A Whisper speech recogniser: the embedded ``whisper-tiny-en`` or a transformers folder."""
    from polysteer.plugins.voice.whisper_adapter import WhisperAdapter

    return WhisperAdapter.load(node.get("name", "whisper-tiny-en"), node.get("dtype") or "float32",
                               node.get("device") or "cpu")


def register_adapters(registry: Any) -> None:
    registry.register("whisper", load_whisper_adapter, requires=ASR_REQUIRES)


def register_config_schemas(registry: Any) -> None:
    registry.register("model.whisper", WhisperModelConfig)


def register_measures(registry: Any) -> None:
    from polysteer.plugins.voice.wer import voice_wer

    registry.register("voice_wer", voice_wer, requires=ASR_REQUIRES)
