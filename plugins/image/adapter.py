"""The image adapter: any diffusers pipeline, steered per denoising step.

The step clock comes from a forward pre-hook on the denoiser (``unet`` or ``transformer``), installed
while a generation runs (it also fills the record's step history). The step is read from the
denoiser's ``timestep`` argument: its position in ``pipeline.scheduler.timesteps`` is the step index
and ``index / (steps - 1)`` the progress, so schedules over progress ("only the first 40% of
steps") mean the same under any scheduler. Under classifier-free guidance the denoiser sees
``[uncond; cond]`` (``[cond; uncond]`` for DiT); the row map says which rows are which, so a style
can touch one branch.

A generation's record (:class:`~polysteer.Generation`) holds the images as float tensors
``(B, 3, H, W)`` in [0, 1]; ``extras["seed"]`` is the seed of the starting noise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from polysteer import Generation, ModelAdapter, RowMap, SiteTable
from polysteer.io import atomic_path
from polysteer.plugins.image.measures import brightness, warmth
from polysteer.plugins.image.sites import denoiser_of, site_table
from polysteer.steering import CoherenceSignal

_COND_FIRST = ("DiTPipeline",)  # pipelines that batch [cond; uncond] instead of [uncond; cond]


class DiffusersAdapter(ModelAdapter):
    """Adapter for a diffusers pipeline (or the shipped :class:`AvatarPipeline`).

    ``generate(inputs, seed=0, **kwargs)``: ``inputs`` is the number of images, a condition for the
    avatar model (``{"glasses": "sunglasses"}``, or a list of them, one per image), or a dict of
    pipeline arguments (``{"prompt_embeds": ..., "negative_prompt_embeds": ...}`` for Stable
    Diffusion, ``{"class_labels": [...]}`` for DiT). Other keyword arguments go to the pipeline
    (``num_inference_steps``, ``guidance_scale``...). The same seed gives the same starting noise.
    """

    modality = "image"
    default_coherence_signal = "noise"

    def __init__(self, pipeline: Any, name: str):
        super().__init__(denoiser_of(pipeline), name)
        self.pipeline = pipeline
        self._table: SiteTable | None = None
        self._guidance = 1.0

    @classmethod
    def load(cls, name_or_path: str, dtype: str = "float32", device: str = "cpu") -> DiffusersAdapter:
        """Load the shipped ``avatars`` model or a local diffusers pipeline folder."""
        from polysteer.plugins.image.models import load_pipeline

        return cls(load_pipeline(name_or_path, dtype, device), Path(str(name_or_path)).name)

    @property
    def is_avatar(self) -> bool:
        """Whether this is the attribute-conditioned avatar pipeline."""
        return type(self.pipeline).__name__ == "AvatarPipeline"

    # -- sites ----------------------------------------------------------------------------------
    @property
    def table(self) -> SiteTable:
        """The denoiser's site table, built once (it walks every block)."""
        if self._table is None:
            self._table = site_table(self.model, self.name)
        return self._table

    def site_table(self) -> SiteTable:
        """UNet: ``down.N``, ``mid``, ``up.N`` (``.attn.J`` inside); transformer: ``blocks.N``
        (``blocks.N.attn``); see :mod:`polysteer.plugins.image.sites`."""
        return self.table

    def coherence_signals(self) -> dict[str, CoherenceSignal]:
        """``noise``: the spread (standard deviation over every value) of each row's denoiser
        prediction at each step; a pushed-off-distribution latent makes the denoiser predict far
        more (or less) noise than it ever does on its own. Two-sided, per tenth of progress."""
        return {"noise": CoherenceSignal("noise", self.model, _prediction_spread,
                                         "standard deviation of the denoiser's prediction",
                                         two_sided=True)}

    # -- inputs ---------------------------------------------------------------------------------
    def prepare_inputs(self, spec: Any) -> Any:
        """``None``: 4 unconditional images; for the avatar model a description (a ``str``, or a
        list of them) becomes the condition it implies
        (:func:`~polysteer.plugins.image.avatars.condition_from_text`: hair colour, glasses, a
        background from the setting; never the mouth); anything else is passed on as is."""
        if spec is None:
            return 4
        if self.is_avatar and (isinstance(spec, str) or (
                isinstance(spec, list) and spec and all(isinstance(s, str) for s in spec))):
            from polysteer.plugins.image.avatars import condition_from_text

            return condition_from_text(spec) if isinstance(spec, str) else [
                condition_from_text(s) for s in spec]
        return spec

    def _call_kwargs(self, inputs: Any, seed: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        call = dict(kwargs)
        call["generator"] = torch.Generator().manual_seed(int(seed))
        if self.is_avatar:
            call.setdefault("num_inference_steps", 25)
            if isinstance(inputs, int):
                call.update(batch_size=inputs)
            elif isinstance(inputs, Mapping) and ("condition" in inputs or "batch_size" in inputs):
                call.update(inputs)
            elif isinstance(inputs, Mapping):
                call.update(condition=dict(inputs))
            elif isinstance(inputs, Sequence) and not isinstance(inputs, str):
                call.update(batch_size=len(inputs), condition=list(inputs))
            else:
                raise TypeError(f"avatar inputs must be a count, a condition dict or a list of them, "
                                f"got {type(inputs).__name__}")
            return call
        if isinstance(inputs, int):
            call["batch_size"] = inputs
        elif isinstance(inputs, Mapping):
            call.update(inputs)
        elif inputs is not None:
            raise TypeError("diffusers inputs must be a count or a dict of pipeline arguments "
                            f"(e.g. prompt_embeds), got {type(inputs).__name__}")
        call["output_type"] = "np"
        return call

    def load_examples(self, examples: Any) -> list[torch.Tensor]:
        """Example images for :func:`polysteer.style_from_example`: PNG/JPEG paths or ``(3, H, W)``
        tensors in [0, 1], as ``(3, S, S)`` tensors at this model's sample size."""
        from PIL import Image

        from polysteer.plugins.image.measures import as_images

        size = int(self.model.config.sample_size)
        out = []
        for item in examples:
            if isinstance(item, str | os.PathLike):
                image = Image.open(item).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
                out.append(as_images([image])[0])
            else:
                out.append(torch.nn.functional.interpolate(
                    torch.as_tensor(item).float()[None], size=(size, size), mode="bilinear")[0])
        return out

    # -- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def run_generation(self, inputs: Any, seed: int = 0, **kwargs: Any) -> Generation:
        """Run the pipeline with the step clock attached; images ``(B, 3, H, W)`` in [0, 1]."""
        call = self._call_kwargs(inputs, seed, kwargs)
        self._guidance = float(call.get("guidance_scale", 1.0))
        handle = None
        if self.attached_clocks:
            self.begin_generation(call.get("num_inference_steps"))
            handle = self.model.register_forward_pre_hook(self.scoped(self._clock_hook()), with_kwargs=True)
        try:
            out = self.pipeline(**call)
        finally:
            if handle is not None:
                handle.remove()
        return Generation(outputs=_as_image_tensor(out), modality=self.modality, model=self.name,
                          extras={"seed": int(seed)})

    def _clock_hook(self):
        last, schedule, rows = [-1], _Schedule(), {}  # rows: one RowMap per batch size, reused

        def hook(_module, args, kwargs):
            sample = kwargs.get("sample", kwargs.get("hidden_states", args[0] if args else None))
            t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
            index, progress = schedule.step_of(self.pipeline.scheduler.timesteps, t, last[0])
            last[0] = index
            batch = sample.shape[0]
            if batch not in rows:
                rows[batch] = self._rows(batch)
            self.advance_step(phase="denoise", rows=rows[batch], index=index, progress=progress)
        return hook

    def _rows(self, batch: int) -> RowMap:
        flag = getattr(self.pipeline, "do_classifier_free_guidance", None)
        cfg = flag if isinstance(flag, bool) else self._guidance > 1.0
        if cfg and batch % 2 == 0:
            return RowMap.cfg(batch // 2, uncond_first=type(self.pipeline).__name__ not in _COND_FIRST)
        return RowMap.plain(batch)

    # -- outputs --------------------------------------------------------------------------------
    def describe_outputs(self, generation: Generation) -> list[str]:
        images = generation.outputs
        b, w = brightness(images), warmth(images)
        h, wd = images.shape[-2:]
        return [f"{h}x{wd} image, brightness {b[i]:.3f}, warmth {w[i]:+.3f}" for i in range(len(images))]

    def save_outputs(self, generation: Generation, stem: Path) -> list[Path]:
        paths = []
        for i, image in enumerate(to_pil(generation.outputs)):
            path = stem.with_name(f"{stem.name}-{i}.png")
            save_png(image, path)
            paths.append(path)
        return paths


def _prediction_spread(args: tuple, output: Any, step: Any) -> torch.Tensor:
    """``(rows,)`` standard deviation of the denoiser's prediction (``.sample`` or the first item)."""
    pred = getattr(output, "sample", None)
    if pred is None:
        pred = output[0] if isinstance(output, tuple | list) else output
    return pred.float().flatten(1).std(dim=1)


def _as_image_tensor(out: Any) -> torch.Tensor:
    """A pipeline's output as float ``(B, 3, H, W)`` in [0, 1]."""
    images = getattr(out, "images", out)
    if isinstance(images, tuple):
        images = images[0]
    if isinstance(images, torch.Tensor):
        return images.float()
    if hasattr(images, "shape"):  # NumPy (B, H, W, C)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float()
    from polysteer.plugins.image.measures import as_images

    return as_images(list(images))


def to_pil(images: torch.Tensor, scale: int = 1) -> list[Any]:
    """Float ``(B, 3, H, W)`` images in [0, 1] as PIL images (nearest-neighbour upscaled by ``scale``)."""
    from PIL import Image

    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    out = []
    for row in pixels:
        image = Image.fromarray(row.contiguous().numpy())
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        out.append(image)
    return out


def image_grid(images: torch.Tensor, columns: int, pad: int = 1) -> torch.Tensor:
    """Tile ``(B, 3, H, W)`` images into one ``(1, 3, H', W')`` image, row-major, white gaps."""
    b, c, h, w = images.shape
    rows = -(-b // columns)
    canvas = torch.ones(c, rows * (h + pad) - pad, columns * (w + pad) - pad)
    for i in range(b):
        r, k = divmod(i, columns)
        canvas[:, r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = images[i]
    return canvas[None]


def save_png(image: Any, path: Path) -> None:
    """Write a PIL image as PNG atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


class _Schedule:
    """Finds a denoiser call's timestep in the scheduler's schedule (read as floats once per
    schedule, not at every step)."""

    def __init__(self) -> None:
        self._source: Any = None
        self._values: list[float] = []

    def step_of(self, timesteps: Any, t: Any, previous: int) -> tuple[int, float]:
        """``(index, progress)`` of ``t``: its first position after ``previous`` (a schedule may
        repeat a timestep, e.g. Heun's), or ``previous + 1`` when it is not in the schedule."""
        if timesteps is not self._source:
            self._source = timesteps
            self._values = torch.as_tensor(timesteps).flatten().float().tolist()
        value = float(torch.as_tensor(t).flatten()[0]) if t is not None else float("nan")
        hits = [i for i, v in enumerate(self._values) if abs(v - value) < 1e-3]
        later = [i for i in hits if i > previous] or [i for i in hits if i >= previous]
        index = later[0] if later else previous + 1
        total = len(self._values)
        return index, (min(1.0, index / (total - 1)) if total > 1 else 1.0)
