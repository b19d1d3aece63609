"""The step clock: which forward pass of a generation is running, and which rows are which sample.

Generation happens in steps: decode steps for an LLM (the prefill is step 0), denoising steps for
diffusion, one pass for a single-shot model. For each forward pass a plugin's adapter tells core a
:class:`Step`. Schedules and rules read only the Step, which is why they are modality-agnostic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Phase:
    """A kind of forward pass (``prefill``, ``decode``, ``denoise``, ``single`` or a plugin's own).

    ``extends_sequence``: each pass of this phase appends its new positions to one growing sequence
    (a KV-cached LLM), so captured activations are concatenated along positions; otherwise the
    passes are repeated views of the same positions (denoising) and are stacked.
    """

    name: str
    extends_sequence: bool = False
    description: str = ""


BUILTIN_PHASES: Mapping[str, Phase] = {
    "prefill": Phase("prefill", True, "an LLM's first pass over the prompt"),
    "decode": Phase("decode", True, "an LLM pass over the newly generated token(s)"),
    "denoise": Phase("denoise", False, "one denoising step of a diffusion model"),
    "single": Phase("single", False, "the only pass of a one-shot model (TTS, an encoder)"),
}
"""The phases core knows; plugins add theirs with ``polysteer_register_step_phases``."""

PHASES = tuple(BUILTIN_PHASES)


@dataclass(frozen=True)
class RowMap:
    """Which logical sample (and which branch) each batch row of a forward pass belongs to.

    Classifier-free guidance doubles the batch (a ``cond`` and an ``uncond`` row per sample); beam
    search repeats each sample ``num_beams`` times. ``sample[r]`` is the logical sample of row
    ``r``; ``branch[r]`` is its branch name.
    """

    sample: torch.Tensor
    branch: tuple[str, ...]

    @staticmethod
    def plain(batch: int) -> RowMap:
        """One row per sample."""
        return RowMap(torch.arange(batch), ("cond",) * batch)

    @staticmethod
    def cfg(samples: int, uncond_first: bool = True) -> RowMap:
        """Classifier-free guidance: the batch is ``[uncond; cond]`` (or ``[cond; uncond]``)."""
        order = ("uncond", "cond") if uncond_first else ("cond", "uncond")
        return RowMap(torch.arange(samples).repeat(2), (order[0],) * samples + (order[1],) * samples)

    @staticmethod
    def beams(samples: int, num_beams: int) -> RowMap:
        """Beam search: each sample's beams are consecutive rows."""
        return RowMap(torch.arange(samples).repeat_interleave(num_beams), ("cond",) * samples * num_beams)

    @property
    def rows(self) -> int:
        """Number of batch rows."""
        return len(self.branch)

    @property
    def samples(self) -> int:
        """Number of logical samples."""
        return int(self.sample.max()) + 1 if len(self.branch) else 0

    def same_as(self, other: RowMap | None) -> bool:
        """Whether ``other`` maps every row the same way (so what was computed per row for it can be
        reused, even when an adapter builds a new RowMap at every step)."""
        return other is self or (other is not None and self.branch == other.branch
                                 and torch.equal(self.sample, other.sample))

    def branch_mask(self, branches: tuple[str, ...]) -> torch.Tensor:
        """Boolean ``(rows,)``: which rows belong to one of ``branches``."""
        return torch.tensor([b in branches for b in self.branch])


@dataclass(frozen=True)
class Step:
    """One forward pass of a generation, as schedules and rules see it.

    Attributes:
        index: 0 for the first pass (the prefill for an LLM), then 1, 2, ...
        progress: how far through the generation, in [0, 1].
        phase: the name of a registered :class:`Phase` (``prefill``, ``decode``, ``denoise``,
            ``single``, or one a plugin registered).
        offset: absolute position of the activation's first position (under a KV cache the
            decode step's activation holds only the new token, at ``offset`` = tokens so far).
        new: how many positions at the end of the activation are new in this pass.
        prompt_length: absolute positions ``< prompt_length`` are the prompt (or conditioning).
        rows: the row map of this pass's batch.
        padding: ``(rows,)`` long, or None: in row ``r`` the absolute positions ``< padding[r]`` are
            padding of a left-padded batch, which rules and read-outs leave out.
    """

    index: int
    progress: float
    phase: str
    offset: int = 0
    new: int = 0
    prompt_length: int = 0
    rows: RowMap = field(default_factory=lambda: RowMap.plain(1))
    padding: torch.Tensor | None = None

    def real_positions(self, width: int, total: int) -> torch.Tensor | None:
        """``(rows, width)`` bool: which of the last ``width`` of this pass's ``total`` positions are
        not padding; None when none of them is (the common case, checked without a device sync)."""
        if self.padding is None:
            return None
        start = self.offset + total - width
        if not len(self.padding) or start >= int(self.padding.max()):
            return None
        absolute = torch.arange(start, start + width, device=self.padding.device)
        return absolute[None, :] >= self.padding[:, None]

    def __post_init__(self) -> None:
        if not isinstance(self.phase, str) or not self.phase:
            raise ValueError(f"Step phase must be a phase name, got {self.phase!r}")
        if not 0.0 <= self.progress <= 1.0:
            raise ValueError(f"Step progress {self.progress} is outside [0, 1]")


class StepClock:
    """Holds the current :class:`Step`; an adapter advances it once per forward pass.

    ``begin(total_steps)`` starts a generation of a known length so ``progress`` can be derived;
    ``advance(...)`` moves to the next pass. Every step is kept, per generation, in
    ``generations`` (cheap: one small object per forward pass) so tests and reports can check the
    accounting; ``history`` is the latest generation's steps.
    """

    def __init__(self, phases: Mapping[str, Phase] = BUILTIN_PHASES) -> None:
        self.phases = phases
        self.total_steps: int | None = None
        self.current: Step | None = None
        self.generations: list[list[Step]] = []
        self.implicit = False
        self._listeners: list = []

    @property
    def history(self) -> list[Step]:
        """Steps of the latest generation."""
        return self.generations[-1] if self.generations else []

    def begin(self, total_steps: int | None) -> None:
        """Start a generation of ``total_steps`` forward passes (``None`` if unknown)."""
        self.total_steps = total_steps
        self.current = None
        self.generations.append([])

    def advance(self, *, phase: str, offset: int = 0, new: int = 0, prompt_length: int = 0,
                rows: RowMap | None = None, index: int | None = None,
                progress: float | None = None, padding: torch.Tensor | None = None) -> Step:
        """Move to the next forward pass and return its Step.

        ``index`` defaults to the previous index + 1 (0 at the start); ``progress`` defaults to
        ``index / (total_steps - 1)`` when the length is known, else 0. ``padding``: see :class:`Step`.
        """
        if phase not in self.phases:
            raise ValueError(f"unknown step phase {phase!r}; known phases: {', '.join(self.phases)}. "
                             "A plugin declares its own with the polysteer_register_step_phases hook")
        if index is None:
            index = 0 if self.current is None else self.current.index + 1
        if progress is None:
            total = self.total_steps
            progress = min(1.0, index / (total - 1)) if total and total > 1 else 0.0
        step = Step(index=index, progress=progress, phase=phase, offset=offset, new=new,
                    prompt_length=prompt_length, rows=rows or RowMap.plain(1), padding=padding)
        if self.current is None and not (self.generations and not self.generations[-1]):
            self.generations.append([])  # an adapter that never called begin()
        self.current = step
        self.generations[-1].append(step)
        for listener in self._listeners:
            listener(step)
        return step

    def implicit_step(self, batch: int, positions: int) -> Step:
        """A forward pass nobody announced (the model called directly): one ``single`` step.

        The runtime ends it after the model's forward pass with :meth:`end_implicit`.
        """
        self.begin(1)
        self.implicit = True
        return self.advance(phase="single", new=positions, prompt_length=positions,
                            rows=RowMap.plain(batch))

    def end_implicit(self) -> None:
        """Close a step opened by :meth:`implicit_step`, so the next pass opens a new one."""
        if self.implicit:
            self.implicit = False
            self.current = None

    def on_advance(self, listener) -> None:
        """Call ``listener(step)`` after every advance (the runtime uses it to tick rules)."""
        self._listeners.append(listener)
