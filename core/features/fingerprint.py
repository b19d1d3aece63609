"""Model fingerprints: which model a dictionary was made on.

A fingerprint has two parts: an *architecture* hash (module types and parameter shapes, exact) and
a *weight signature* (a few hundred weight values sampled at fixed places). Two fingerprints match
when the architecture is the same and the signatures agree to about 2%: the same weights in fp16,
bf16 or dequantised still match, a different checkpoint of the same architecture does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

_SAMPLES_PER_TENSOR = 4
_MAX_SAMPLES = 256


@dataclass(frozen=True)
class ModelFingerprint:
    """Identifies a model: a readable name, an architecture hash and a weight signature."""

    name: str
    architecture: str
    signature: tuple[float, ...]

    def matches(self, other: ModelFingerprint) -> bool:
        """True if ``other`` is the same architecture with (nearly) the same weights."""
        if self.architecture != other.architecture or len(self.signature) != len(other.signature):
            return False
        a = torch.tensor(self.signature, dtype=torch.float64)
        b = torch.tensor(other.signature, dtype=torch.float64)
        return bool(torch.allclose(a, b, rtol=2e-2, atol=1e-3 * (a.abs().max().item() + 1e-12)))

    def short(self) -> str:
        """A short readable id, e.g. ``smollm2@3f2a9c1d``."""
        return f"{self.name}@{self.architecture[:8]}"

    def to_json(self) -> dict:
        """A JSON-serialisable dict."""
        return {"name": self.name, "architecture": self.architecture,
                "signature": list(self.signature)}

    @staticmethod
    def from_json(data: dict) -> ModelFingerprint:
        """Inverse of :meth:`to_json`."""
        return ModelFingerprint(str(data["name"]), str(data["architecture"]),
                                tuple(float(v) for v in data["signature"]))


def fingerprint(model: nn.Module, name: str | None = None) -> ModelFingerprint:
    """Fingerprint ``model`` (fast: hashes shapes, samples a few values per parameter)."""
    arch = hashlib.sha256()
    samples: list[float] = []
    for pname, param in model.named_parameters():
        arch.update(f"{pname}:{tuple(param.shape)};".encode())
        if len(samples) < _MAX_SAMPLES and param.numel():
            flat = param.detach().reshape(-1)
            last = flat.numel() - 1  # integer spacing: float linspace overshoots on huge tensors
            idx = torch.tensor([last * k // (_SAMPLES_PER_TENSOR - 1) for k in range(_SAMPLES_PER_TENSOR)])
            samples.extend(flat[idx.to(flat.device)].float().cpu().tolist())
    for mname, module in model.named_modules():
        arch.update(f"{mname}:{type(module).__name__};".encode())
    return ModelFingerprint(name or type(model).__name__, arch.hexdigest(),
                            tuple(samples[:_MAX_SAMPLES]))
