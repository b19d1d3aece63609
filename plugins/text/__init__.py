"""The text plugin: transformers causal LMs (SmolLM2-135M-Instruct embedded), steered per token.

Registers the ``transformers`` model adapter (``model: {kind: transformers, name: smollm2}``).
Everything that imports transformers is imported lazily, so polysteer starts without it and
``polysteer plugins`` shows the install that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polysteer import Requirement, hookimpl

TEXT_EXTRA = "pip install 'polysteer[text]'"
REQUIRES = [Requirement("transformers", TEXT_EXTRA), Requirement("gguf", TEXT_EXTRA),
            Requirement("accelerate", TEXT_EXTRA)]


@dataclass
class TransformersModelConfig:
    """Config node ``model`` for ``kind: transformers``."""

    kind: str = "transformers"
    name: str = "smollm2"  # an embedded name, a local folder or a hub id
    dtype: str | None = None  # None: --dtype / POLYSTEER_DTYPE, else float32
    device: str | None = None  # None: --device / POLYSTEER_DEVICE, else cpu


def load_transformers(node: dict[str, Any]):
    """A transformers causal LM: an embedded name (smollm2), a local folder or a hub id."""
    from polysteer.plugins.text.adapter import TransformersAdapter

    return TransformersAdapter.load(node.get("name", "smollm2"), node.get("dtype") or "float32",
                                    node.get("device") or "cpu")

SHIPPED = Path(__file__).parent / "shipped"
"""Files this plugin ships: SmolLM2 concept dictionaries, the residual SAE and the SMS-spam classifier."""


@hookimpl
def polysteer_register_shipped_folders(registry):
    registry.register("text", SHIPPED, description="SmolLM2 concept dictionaries, the residual SAE "
                                                   "and the SMS-spam classifier")


@hookimpl
def polysteer_register_measures(registry):
    from polysteer.plugins.text.measures import TEXT_MEASURES

    for name, measure in TEXT_MEASURES.items():  # text_perplexity, text_<concept>
        registry.register(name, measure, requires=REQUIRES[:1])


@hookimpl
def polysteer_register_adapters(registry):
    registry.register("transformers", load_transformers, requires=REQUIRES)


@hookimpl
def polysteer_register_config_schemas(registry):
    registry.register("model.transformers", TransformersModelConfig)


@hookimpl
def polysteer_register_renderers(registry):
    from polysteer.plugins.text.harvest import TextRenderer

    registry.register("text", TextRenderer, requires=REQUIRES[:1])


@hookimpl
def polysteer_register_row_selectors(registry):
    from polysteer.plugins.text.harvest import text_tokens

    registry.register("text-tokens", text_tokens)


@hookimpl
def polysteer_register_commands(registry):
    from polysteer.plugins.text.commands import TEXT_COMMANDS

    for name, command in TEXT_COMMANDS.items():
        registry.register(name, command, requires=REQUIRES[:1])


@hookimpl
def polysteer_register_generate_extensions(registry):
    from polysteer.plugins.text.commands import TEXT_GENERATION

    registry.register("transformers", TEXT_GENERATION, requires=REQUIRES[:1])


@hookimpl
def polysteer_register_artifacts(registry):
    from polysteer.plugins.text.models import artifacts

    for item in artifacts():  # smollm2
        registry.register(item.name, item, description=item.description)


@hookimpl
def polysteer_register_effect_measures(registry):
    from polysteer.plugins.text.labels import LOGPROB_MEASURE, TEXT_EFFECT

    registry.register(LOGPROB_MEASURE, TEXT_EFFECT, description=TEXT_EFFECT.description,
                      requires=REQUIRES[:1])


@hookimpl
def polysteer_register_calibration_judges(registry):
    from polysteer.plugins.text.evaluation import TextCalibrationJudge

    registry.register("text", TextCalibrationJudge.from_spec,
                      description="held-out prompts; naive Bayes judge on held-out examples; "
                                  "perplexity vs human text and repetition", requires=REQUIRES[:1])
