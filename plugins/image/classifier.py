"""A small attribute classifier for avatar images: the measure that says "this face wears sunglasses".

One convolutional trunk (about 20k parameters) with a softmax head per attribute of
:data:`~polysteer.plugins.image.avatars.ATTRIBUTES`, trained on rendered avatars (with blur and
noise so it also reads the softer images the diffusion model draws). Shipped next to the model as
``plugins/image/shipped/model/avatars-classifier`` and exposed as measures ``avatar_<attribute>_<value>``
(the probability of that value, one number per image).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polysteer.errors import CorruptFileError
from polysteer.io import read_folder, read_json, read_tensors, write_folder, write_json, write_tensors

SHIPPED = "avatars-classifier"


class AttributeClassifier(nn.Module):
    """Images ``(B, 3, H, W)`` in [0, 1] -> logits per attribute."""

    def __init__(self, attributes: Mapping[str, Sequence[str]], width: int = 16) -> None:
        super().__init__()
        self.attributes = {k: tuple(v) for k, v in attributes.items()}
        self.width = width
        w = width
        self.trunk = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 3, padding=1, stride=2), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1, stride=2),
            nn.GELU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten())
        self.heads = nn.ModuleDict({k: nn.Linear(8 * w, len(v)) for k, v in self.attributes.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(images * 2 - 1)
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Softmax probabilities per attribute, ``(B, n_values)`` each."""
        return {k: v.softmax(-1) for k, v in self(images.float()).items()}

    def score(self, images: torch.Tensor, attribute: str, value: str) -> torch.Tensor:
        """``(B,)`` probability that each image shows ``attribute == value``."""
        if attribute not in self.attributes or value not in self.attributes[attribute]:
            raise KeyError(f"the classifier has no {attribute}={value}; it knows {self.attributes}")
        return self.probabilities(images)[attribute][:, self.attributes[attribute].index(value)]

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` atomically."""
        vocab = [[k, list(v)] for k, v in self.attributes.items()]
        return write_folder(Path(folder), lambda tmp: (
            write_json(tmp / "config.json", {"width": self.width, "attributes": vocab}),
            write_tensors(tmp / "model.safetensors", self.state_dict())))


def load_classifier(folder: str | Path | None = None) -> AttributeClassifier:
    """The shipped avatar classifier, or one saved in ``folder``."""
    from polysteer.plugins.image import SHIPPED as shipped_dir

    folder = Path(folder) if folder is not None else shipped_dir / "model" / SHIPPED

    def load(real: Path) -> AttributeClassifier:  # one version of the folder, checked
        cfg = read_json(real / "config.json")
        try:
            model = AttributeClassifier(dict(cfg["attributes"]), int(cfg["width"]))
            model.load_state_dict(read_tensors(real / "model.safetensors"))
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            raise CorruptFileError(f"{folder} is not a valid avatar classifier folder "
                                   f"({type(err).__name__}: {err}); train or copy it again") from None
        return model.eval()

    return read_folder(folder, load)


@functools.lru_cache(maxsize=1)
def shipped_classifier() -> AttributeClassifier:
    """The shipped classifier, loaded once."""
    return load_classifier()


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random blur (the diffusion model draws softer edges), pixel noise and horizontal flips."""
    blur = torch.rand(len(x), generator=g) < 0.5
    soft = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(blur[:, None, None, None], 0.5 * x + 0.5 * soft, x)
    x = x + 0.03 * torch.randn(x.shape, generator=g)
    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x).clamp(0, 1)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, attributes: Mapping[str, Sequence[str]],
                     *, steps: int = 1500, batch: int = 64, lr: float = 2e-3, seed: int = 0,
                     progress: bool = True) -> AttributeClassifier:
    """Train on ``uint8 (N, 3, H, W)`` images with ``(N, n_attributes)`` labels (1-based, 0 = none)."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    model = AttributeClassifier(attributes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="train classifier", disable=not progress, mininterval=2.0):
        idx = torch.randint(len(images), (batch,), generator=g)
        x = _augment(images[idx].float() / 255, g)
        logits = model(x)
        loss = sum(F.cross_entropy(logits[k], labels[idx, i] - 1) for i, k in enumerate(model.attributes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: AttributeClassifier, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Held-out accuracy per attribute on ``uint8`` images and 1-based labels."""
    probs = model.probabilities(images.float() / 255)
    return {k: float((probs[k].argmax(-1) == labels[:, i] - 1).float().mean())
            for i, k in enumerate(model.attributes)}


def classifier_measures() -> dict[str, Any]:
    """Measures ``avatar_<attribute>_<value>(generation, baseline) -> float``: the shipped
    classifier's mean probability of that value over the generation's images (loaded on first use)."""
    from polysteer.plugins.image.avatars import ATTRIBUTES
    from polysteer.plugins.image.measures import as_images

    def make(attribute: str, value: str):
        def measure(generation: Any, baseline: Any = None) -> float:
            images = as_images(generation.outputs)
            return shipped_classifier().score(images, attribute, value).mean().item()
        measure.__doc__ = f"Mean probability (shipped avatar classifier) that {attribute} is {value}."
        return measure

    return {f"avatar_{a}_{v}": make(a, v) for a, values in ATTRIBUTES.items() for v in values}
