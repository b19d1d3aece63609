"""Which device and precision a model runs in: ``auto|cpu|cuda|mps`` and ``float32|bfloat16|float16``.

Every command that loads a model takes ``--device`` and ``--dtype``; configs take ``device:`` and
``dtype:`` in a model node. :func:`resolve_device` and :func:`resolve_dtype` turn those words into
torch objects with one rule set:

* ``auto`` picks ``cuda`` when a CUDA GPU is visible (``cuda:LOCAL_RANK`` under torchrun), else
  ``mps`` on Apple silicon, else ``cpu``;
* a named device that this machine lacks is a :class:`~polysteer.errors.ConfigError` that says
  what is there (no silent fallback to the CPU);
* dtype ``auto`` is ``bfloat16`` on a GPU that supports it, ``float16`` on other GPUs and MPS, and
  ``float32`` on the CPU. Half precision on the CPU is allowed when asked for explicitly (it is
  slow there but exercises the same code path).

:func:`model_defaults` sets the device and dtype that :func:`~polysteer.models.load_model` uses for
model nodes that do not name their own (the CLI sets it from ``--device``/``--dtype``); outside
it, the environment variables ``POLYSTEER_DEVICE`` and ``POLYSTEER_DTYPE`` do the same (how
``scripts/gpu_check.sh`` runs the overhead benchmarks on a GPU).
Dictionaries and styles follow the model: the steering runtime moves a dictionary to the model's
device once when a steering context opens, and interventions keep one copy of each vector per
(device, dtype) of the activations they see.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch

from polysteer.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "half": torch.float16}
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")

_defaults: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "polysteer_model_defaults", default=(None, None))


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device ``spec`` names (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``).

    ``auto`` (and ``None``) picks the best available device; under torchrun ``cuda`` means this
    process's GPU (``LOCAL_RANK``). A device the machine lacks is a :class:`ConfigError`.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    base = text.split(":", 1)[0]
    if base not in DEVICES:
        raise ConfigError(f"unknown device {spec!r}; use one of {', '.join(DEVICES)} (or cuda:N)")
    if base == "auto":
        if torch.cuda.is_available():
            return resolve_device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} was asked for but torch sees no CUDA GPU here "
                              f"(torch {torch.__version__}); use --device cpu or auto, or install "
                              "a CUDA build of torch")
        if ":" in text:
            return torch.device(text)
        local = os.environ.get("LOCAL_RANK")
        index = int(local) % torch.cuda.device_count() if local and local.isdigit() else 0
        return torch.device("cuda", index)
    if base == "mps" and not _mps_available():
        raise ConfigError(f"device {spec!r} was asked for but MPS is not available here; use "
                          "--device cpu or auto")
    return torch.device(text)


def resolve_dtype(spec: str | torch.dtype | None = "auto",
                  device: str | torch.device | None = None) -> torch.dtype:
    """The torch dtype ``spec`` names (``auto``, ``float32``, ``bfloat16``/``bf16``, ``float16``/``fp16``).

    ``auto`` depends on ``device`` (resolved with :func:`resolve_device`): ``bfloat16`` on a GPU that
    supports it, else ``float16`` on GPUs and MPS, ``float32`` on the CPU.
    """
    if isinstance(spec, torch.dtype):
        return spec
    text = (spec or "auto").strip().lower().removeprefix("torch.")
    if text == "auto":
        dev = resolve_device(device)
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if dev.type == "mps" else torch.float32
    if text not in DTYPES:
        raise ConfigError(f"unknown dtype {spec!r}; use one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[text]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the word configs use)."""
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def model_defaults(device: str | None = None, dtype: str | None = None) -> Iterator[None]:
    """Within the block, models loaded without their own ``device``/``dtype`` use these."""
    token = _defaults.set((device, dtype))
    try:
        yield
    finally:
        _defaults.reset(token)


def current_model_defaults() -> tuple[str | None, str | None]:
    """The ``(device, dtype)`` set by the innermost :func:`model_defaults`, else the environment
    variables ``POLYSTEER_DEVICE`` / ``POLYSTEER_DTYPE`` (``None``: not set)."""
    device, dtype = _defaults.get()
    return (device or os.environ.get("POLYSTEER_DEVICE") or None,
            dtype or os.environ.get("POLYSTEER_DTYPE") or None)
