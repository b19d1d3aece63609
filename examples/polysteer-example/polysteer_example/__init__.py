"""polysteer-example: a complete third-party polysteer plugin.

It teaches polysteer one model family and one intervention, using only polysteer's public API:

* adapter kind ``example-conv``: :class:`~polysteer_example.model.ExampleConvAdapter`, a tiny
  WaveNet-style autoregressive model over audio-like frames (activations ``(B, C, T)``);
* config schema ``model.example-conv``: the options ``load_model("example-conv", ...)`` accepts;
* intervention ``rotate``: turn an activation towards a feature, keeping its norm;
* measure ``example_centroid_shift``: how far steering moved the spectral centroid;
* effect measure ``example-centroid``: the spectral centroid per sample, with which polysteer's
  label-by-effect names features by what adding them does (``centroid+ (N)``).
* renderer ``example-frames`` and measured attribute ``example-frame-centroid``: what polysteer's
  one harvest and concept builder need to build concepts on this model.

polysteer finds this module through the entry point ``example = polysteer_example`` in group
``polysteer`` and registers the hook implementations below.
"""

from __future__ import annotations

from polysteer import Registry, hookimpl
from polysteer.workflows import EffectMeasure

from polysteer_example.harvest import FramePrompts, frame_centroid
from polysteer_example.measures import centroid_effect, centroid_shift
from polysteer_example.model import (
    ExampleConvAdapter,
    ExampleConvConfig,
    TinyWaveNet,
    WaveNetConfig,
    example_frames,
    load_example_conv,
)
from polysteer_example.rotate import Rotate, make_rotate

__version__ = "0.1.0"

__all__ = [
    "ExampleConvAdapter", "ExampleConvConfig", "FramePrompts", "Rotate", "TinyWaveNet", "WaveNetConfig",
    "centroid_effect", "centroid_shift", "example_frames", "frame_centroid", "load_example_conv",
    "make_rotate",
]


@hookimpl
def polysteer_register_adapters(registry: Registry) -> None:
    """The ``example-conv`` model kind: ``polysteer.load_model("example-conv", n_blocks=4)``."""
    registry.register("example-conv", load_example_conv)


@hookimpl
def polysteer_register_config_schemas(registry: Registry) -> None:
    """Options of ``model.kind: example-conv`` nodes, checked before the model is built."""
    registry.register("model.example-conv", ExampleConvConfig)


@hookimpl
def polysteer_register_interventions(registry: Registry) -> None:
    """The ``rotate`` intervention kind (``intervention: rotate`` in a style component)."""
    registry.register("rotate", make_rotate)


@hookimpl
def polysteer_register_measures(registry: Registry) -> None:
    """Measures; prefixed with the plugin's name because measure names are global."""
    registry.register("example_centroid_shift", centroid_shift)


@hookimpl
def polysteer_register_effect_measures(registry: Registry) -> None:
    """What label-by-effect measures on this model family: the spectral centroid per sample."""
    registry.register("example-centroid", EffectMeasure(centroid_effect, "audio",
                                                        "spectral centroid of the generated frames"))


@hookimpl
def polysteer_register_renderers(registry: Registry) -> None:
    """How a batch of prompt frames runs through the model in a harvest."""
    registry.register("example-frames", FramePrompts)


@hookimpl
def polysteer_register_attributes(registry: Registry) -> None:
    """A measured value per harvested frame, for probe concepts."""
    registry.register("example-frame-centroid", frame_centroid)
