"""The image calibration judge (``polysteer calibrate`` on an avatar-like image model).

Concept score: the avatar attribute classifier's probability that the images show the concept's
attribute values (``image.attributes`` of the judge spec, e.g. ``{mouth: smile}``). Coherence: the
fraction of the *other* attributes' readings (hair, skin, background... the concept should not touch)
that changed from the unsteered images of the same seeds; bound :data:`CHANGED_BOUND` (at most one
reading in four may change). The mean pixel distance from the unsteered images is reported too.
"""

from __future__ import annotations

from typing import Any

import torch

from polysteer import Generation
from polysteer.plugins.image.measures import distance_to_baseline

CHANGED_BOUND = 0.25
"""Most off-target attribute readings that may change."""


class ImageCalibrationJudge:
    """Generates ``seeds`` images (seed 0, ``steps`` denoising steps) and reads them."""

    score_name = "classifier P(attributes)"
    coherence_name = "off-target attributes changed"
    grid = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)

    def __init__(self, adapter: Any, spec: dict[str, Any], *, seeds: int = 6, steps: int = 10,
                 classifier: Any = None):
        from polysteer.plugins.image.classifier import shipped_classifier

        self.name = str(spec.get("name", "concept"))
        self.attributes = dict(spec["image"]["attributes"])
        self.classifier = classifier if classifier is not None else shipped_classifier()
        known = self.classifier.attributes
        for a, v in self.attributes.items():
            if a not in known or v not in known[a]:
                raise ValueError(f"judge {self.name!r}: the classifier has no {a}={v}; it knows {known}")
        self.others = [a for a in known if a not in self.attributes]
        self.seeds = int(spec["image"].get("seeds", seeds))
        self.steps = int(spec["image"].get("steps", steps))
        self._base: tuple[int, dict[str, torch.Tensor]] | None = None

    @classmethod
    def from_spec(cls, adapter: Any, spec: dict[str, Any]) -> ImageCalibrationJudge:
        """The registered factory."""
        return cls(adapter, spec)

    def generate(self, adapter: Any) -> Generation:
        """``seeds`` images from seed 0."""
        return adapter.generate(self.seeds, seed=0, num_inference_steps=self.steps)

    def _predicted(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {a: p.argmax(-1) for a, p in self.classifier.probabilities(images).items()}

    def measure(self, adapter: Any, generation: Generation, baseline: Generation | None) -> dict[str, Any]:
        """Score (mean P of the concept's attribute values), coherence (changed off-target readings)."""
        images = generation.outputs.float()
        probs = self.classifier.probabilities(images)
        score = sum(float(probs[a][:, self.classifier.attributes[a].index(v)].mean())
                    for a, v in self.attributes.items()) / len(self.attributes)
        if baseline is None:
            return {"score": score, "coherence": 0.0, "distance": 0.0}
        if self._base is None or self._base[0] != id(baseline):
            self._base = (id(baseline), self._predicted(baseline.outputs.float()))
        before, after = self._base[1], self._predicted(images)
        changed = sum(int((after[a] != before[a]).sum()) for a in self.others)
        total = max(1, len(self.others) * len(images))
        return {"score": score, "coherence": changed / total,
                "distance": float(distance_to_baseline(images, baseline.outputs.float()).mean())}

    def bound(self, baseline: dict[str, Any]) -> float:
        """:data:`CHANGED_BOUND`."""
        return CHANGED_BOUND

    def describe(self) -> dict[str, Any]:
        """What the judge is."""
        return {"kind": "image", "spec": self.name, "attributes": self.attributes, "seeds": self.seeds,
                "steps": self.steps, "bound": f"at most {CHANGED_BOUND:.0%} of the off-target "
                                               f"readings ({', '.join(self.others)}) change"}
