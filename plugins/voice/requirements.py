"""What the voice plugin's parts need installed, and the one install command that provides it."""

from __future__ import annotations

from polysteer import Requirement

VOICE_EXTRA = "pip install 'polysteer[voice]'"
MEASURES_REQUIRE = [Requirement("torchaudio", VOICE_EXTRA)]
TTS_REQUIRES = [Requirement("transformers", VOICE_EXTRA), Requirement("onnx", VOICE_EXTRA)]
ASR_REQUIRES = [Requirement("transformers", VOICE_EXTRA), Requirement("torchaudio", VOICE_EXTRA)]
