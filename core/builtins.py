"""The built-in core plugin: interventions, schedules, masks, the native dictionary format,
generic measures, the reference adapter and the core CLI commands.

It uses exactly the public registration hooks a third-party plugin uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polysteer.features.dictionary import NATIVE_FORMAT
from polysteer.features.saelens import SAELENS_FORMAT
from polysteer.models.reference import ReferenceAdapter, ReferenceConfig, ReferenceLM
from polysteer.plugin.manager import hookimpl
from polysteer.steering.generation import Generation
from polysteer.steering.interventions import BUILTIN_INTERVENTIONS
from polysteer.steering.schedules import BUILTIN_ENVELOPES, BUILTIN_MASKS
from polysteer.steering.step import BUILTIN_PHASES
from polysteer.workflows.demo import high_token_fraction

SHIPPED = Path(__file__).parent / "shipped"
"""Files core ships (``dictionary/reference-high-tokens``)."""


@dataclass
class ReferenceModelConfig:
    """Config node ``model`` for ``kind: reference``."""

    kind: str = "reference"
    vocab_size: int = 64
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    max_positions: int = 128
    seed: int = 0
    device: str | None = None
    dtype: str | None = None


def load_reference(options: dict[str, Any]) -> ReferenceAdapter:
    """The tiny pure-torch reference language model (random weights, seeded)."""
    fields = {k: v for k, v in options.items() if k not in ("kind", "device", "dtype")}
    model = ReferenceLM(ReferenceConfig(**fields))
    if options.get("device") or options.get("dtype"):
        from polysteer.models.device import resolve_device, resolve_dtype

        device = resolve_device(options.get("device") or "cpu")
        model.to(device=device, dtype=resolve_dtype(options["dtype"], device)
                 if options.get("dtype") else None)
    return ReferenceAdapter(model)


def _baseline_outputs(name: str, baseline: Generation | None) -> torch.Tensor:
    if baseline is None:
        raise ValueError(f"{name} compares with the unsteered generation (baseline), got None")
    return baseline.outputs


def changed_fraction(generation: Generation, baseline: Generation | None) -> float:
    """Fraction of output elements that differ from the unsteered output (same seed)."""
    a, b = generation.outputs, _baseline_outputs("changed_fraction", baseline)
    if a.shape != b.shape:
        return 1.0
    return (a != b).float().mean().item()


def mean_abs_difference(generation: Generation, baseline: Generation | None) -> float:
    """Mean absolute difference from the unsteered output (for continuous outputs)."""
    a, b = generation.outputs.float(), _baseline_outputs("mean_abs_difference", baseline).float()
    if a.shape != b.shape:
        return float("nan")
    return (a - b).abs().mean().item()


@hookimpl
def polysteer_register_adapters(registry):
    registry.register("reference", load_reference)


@hookimpl
def polysteer_register_config_schemas(registry):
    registry.register("model.reference", ReferenceModelConfig)


@hookimpl
def polysteer_register_dictionary_formats(registry):
    registry.register("polysteer", NATIVE_FORMAT,
                      description="dictionary.json + dictionary.safetensors (native)")
    registry.register("saelens", SAELENS_FORMAT,
                      description="SAELens folders: cfg.json + sae_weights.safetensors")


@hookimpl
def polysteer_register_interventions(registry):
    for name, factory in BUILTIN_INTERVENTIONS.items():
        registry.register(name, factory)


@hookimpl
def polysteer_register_schedules(registry):
    for name, factory in BUILTIN_ENVELOPES.items():
        registry.register(name, factory)


@hookimpl
def polysteer_register_position_masks(registry):
    for name, factory in BUILTIN_MASKS.items():
        registry.register(name, factory)


@hookimpl
def polysteer_register_shipped_folders(registry):
    registry.register("core", SHIPPED, description="the reference model's demo dictionary")


@hookimpl
def polysteer_register_step_phases(registry):
    for name, phase in BUILTIN_PHASES.items():
        registry.register(name, phase, description=phase.description)


@hookimpl
def polysteer_register_measures(registry):
    registry.register("changed_fraction", changed_fraction)
    registry.register("mean_abs_difference", mean_abs_difference)
    registry.register("high_token_fraction", high_token_fraction)


@hookimpl
def polysteer_register_row_selectors(registry):
    from polysteer.workflows.harvesting import all_positions, skip_first

    registry.register("all", all_positions)
    registry.register("skip-first", skip_first)


@hookimpl
def polysteer_register_commands(registry):
    from polysteer.cli.commands import CORE_COMMANDS

    for name, command in CORE_COMMANDS.items():
        registry.register(name, command, description=command.help)
    from polysteer.cli.prefs import PREFS_COMMAND

    registry.register("prefs", PREFS_COMMAND, description=PREFS_COMMAND.help)
    from polysteer.cli.style_commands import STYLE_COMMANDS

    for name, command in STYLE_COMMANDS.items():
        registry.register(name, command, description=command.help)
    from polysteer.cli.calibrate import CALIBRATE_COMMAND

    registry.register("calibrate", CALIBRATE_COMMAND, description=CALIBRATE_COMMAND.help)
    from polysteer.cli.audit import AUDIT_COMMAND

    registry.register("audit", AUDIT_COMMAND, description=AUDIT_COMMAND.help)


@hookimpl
def polysteer_register_artifacts(registry):
    from polysteer.data.datasets import artifacts

    for item in artifacts():  # the named text corpora
        registry.register(item.name, item, description=item.description)
