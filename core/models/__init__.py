"""Loading models by name or config, and the tiny built-in reference model.

The names below are the declared surface plugins import (``from polysteer.models import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.models.device import (
    current_model_defaults,
    model_defaults,
    resolve_device,
    resolve_dtype,
)
from polysteer.models.loading import load_model
from polysteer.models.reference import ReferenceAdapter, ReferenceConfig, ReferenceLM, reference_prompts

__all__ = [
    "ReferenceAdapter", "ReferenceConfig", "ReferenceLM", "load_model", "reference_prompts",
    "current_model_defaults", "model_defaults", "resolve_device", "resolve_dtype",
]
