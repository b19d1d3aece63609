"""What the voice plugin registers for text-to-speech: the ``vits`` adapter, its config, ``speak``.

Kept apart from ``__init__`` so the plugin's hooks stay one line per registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polysteer.plugins.voice.requirements import TTS_REQUIRES


@dataclass
class VitsModelConfig:
    """Config node ``model`` for ``kind: vits``."""

    kind: str = "vits"
    name: str = "joe"  # an embedded voice, or a VITS folder (Piper-converted or transformers/MMS)
    device: str | None = None  # None: --device / POLYSTEER_DEVICE, else cpu
    noise_scale: float | None = None  # None: the voice's own (0.667 for joe)
    noise_w: float | None = None
    length_scale: float | None = None


def load_vits(node: dict[str, Any]):
    """A VITS voice: the embedded Piper voice ``joe`` (en_US-joe-medium) or a VITS folder."""
    from polysteer.plugins.voice.adapter import VitsAdapter

    return VitsAdapter.load(node.get("name", "joe"), node.get("device") or "cpu",
                            noise_scale=node.get("noise_scale"), noise_w=node.get("noise_w"),
                            length_scale=node.get("length_scale"))


def register_adapters(registry: Any) -> None:
    registry.register("vits", load_vits, requires=TTS_REQUIRES)


def register_config_schemas(registry: Any) -> None:
    registry.register("model.vits", VitsModelConfig)


def register_commands(registry: Any) -> None:
    from polysteer.plugins.voice.commands import VOICE_COMMANDS

    for name, command in VOICE_COMMANDS.items():
        registry.register(name, command, requires=TTS_REQUIRES)
