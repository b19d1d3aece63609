"""polysteer's one concept builder on the example model, through the parts this plugin registers."""

from __future__ import annotations

import polysteer
import torch
from polysteer import ConceptRecipe, build_concept

import polysteer_example
from polysteer_example import ExampleConvAdapter, example_frames

SITE = "blocks.1.residual"


def _tilted(samples: int, high: bool, seed: int) -> list[torch.Tensor]:
    """Frames with their energy in the high (or low) half of the bins."""
    frames = example_frames(samples=samples, length=6, seed=seed).abs()
    weight = torch.linspace(0.1, 1.0, frames.shape[1])
    return list(frames * (weight if high else weight.flip(0))[:, None])


def test_a_brightness_probe_reads_bright_frames_higher(register_plugin) -> None:
    register_plugin(polysteer_example, "example")
    adapter = ExampleConvAdapter()
    recipe = ConceptRecipe(name="brighter", site=SITE, renderer="example-frames", rows="all",
                           method="probe", examples=list(example_frames(samples=64, length=6, seed=1).abs()),
                           attribute="example-frame-centroid", batch_size=16, scale="projection")
    concept = build_concept(adapter, recipe)
    assert concept.info.method == "probe" and concept.info.details["train_r"] > 0.9
    concept.check_compatible(adapter.model_fingerprint, SITE, adapter.bind(SITE).channels)

    def read(frames):
        with polysteer.steer(adapter, None, capture=[SITE]) as run:
            adapter.generate(torch.stack(frames), max_new_frames=1)
        return float((run.captured(SITE) @ concept.directions[0]).mean())

    assert read(_tilted(16, high=True, seed=2)) > read(_tilted(16, high=False, seed=2))
