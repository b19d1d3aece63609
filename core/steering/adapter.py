"""The model-adapter protocol: what a plugin implements to teach core one family of models.

An adapter wraps a loaded model. It describes its sites with a :class:`~polysteer.SiteTable`
(canonical name -> module path, hook point, layout, channels), runs generation, and advances the
step clock once per forward pass. Core installs the hooks itself (see :mod:`polysteer.steering.runtime`),
so an adapter never touches interventions, schedules or rules. A generation returns a
:class:`~polysteer.steering.generation.Generation` record; an adapter keeps no state about its latest
generation.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from polysteer.features.fingerprint import ModelFingerprint, fingerprint
from polysteer.io.fileio import write_json
from polysteer.steering.generation import Generation, as_generation
from polysteer.steering.sites import SiteBinding, SiteTable
from polysteer.steering.step import RowMap, StepClock

if TYPE_CHECKING:
    from polysteer.steering.runtime import Steering


_ATTACHED: ContextVar[Mapping[int, tuple[StepClock, ...]]] = ContextVar(
    "polysteer_attached_clocks", default=MappingProxyType({}))
"""id(adapter) -> the clocks attached to it in this context (a thread, an asyncio task)."""


class ModelAdapter(ABC):
    """Base class of every model adapter; subclass it in a plugin and register a factory.

    Subclasses set ``modality`` (``text``, ``image``, ``voice`` or their own) and implement
    :meth:`site_table` and :meth:`run_generation`; :meth:`sites` and :meth:`bind` come from the
    table (an adapter written before site tables may override those two instead). Inside
    ``run_generation`` they call :meth:`begin_generation` once with the number of forward passes
    (if known) and :meth:`advance_step` before every forward pass, and return a
    :class:`~polysteer.steering.generation.Generation` holding the outputs and what measures need (prompt
    length, per-row lengths, texts, sample rate...); :meth:`generate` adds the step history.
    Everything about a generation lives in its record, never on ``self``.
    """

    modality: ClassVar[str] = "other"
    #: the coherence signal a governor reads when a style names none (``None``: ``activation``)
    default_coherence_signal: ClassVar[str | None] = None

    def __init__(self, model: nn.Module, name: str):
        cls = type(self)
        if cls.site_table is ModelAdapter.site_table and (
                cls.sites is ModelAdapter.sites or cls.bind is ModelAdapter.bind):
            raise TypeError(f"{cls.__name__} must implement site_table() (or, the older way, "
                            "both sites() and bind())")
        self.model = model
        self.name = name

    # -- to implement ---------------------------------------------------------------------------
    def site_table(self) -> SiteTable:
        """This model's sites: canonical name -> module path (relative to :attr:`model`), hook
        point, layout and channels, in forward order. :meth:`sites` and :meth:`bind` use it."""
        raise NotImplementedError(f"{type(self).__name__} has no site_table()")

    def sites(self) -> list[str]:
        """Every site name this model has, in forward order."""
        return self.site_table().sites()

    def bind(self, site: str) -> SiteBinding:
        """The module, hook point and layout of ``site``; an
        :class:`~polysteer.UnknownSiteError` (with close names) for an unknown site."""
        return self.site_table().resolve(self.model, site)

    @abstractmethod
    def run_generation(self, inputs: Any, **kwargs: Any) -> Generation:
        """Generate from ``inputs``; advance the step clock once per forward pass; return the record."""

    # -- optional, with defaults ----------------------------------------------------------------
    def prepare_inputs(self, spec: Any) -> Any:
        """Turn an ``experiment.inputs`` config value into generation inputs (default: as is)."""
        return spec

    def save_outputs(self, generation: Generation, stem: Path) -> list[Path]:
        """Write a generation's outputs next to ``stem`` (text, PNG, WAV...); default: a JSON list
        of each row cut to its length."""
        path = stem.with_name(stem.name + ".json")
        write_json(path, [row.tolist() for row in generation.rows()])
        return [path]

    def describe_outputs(self, generation: Generation) -> list[str]:
        """A short human-readable rendering of each sample, for reports and ``--compare``
        (default: its texts if it has any, else each row's values)."""
        if generation.texts is not None:
            return list(generation.texts)
        return [str(row.tolist()) for row in generation.rows()]

    def coherence_signals(self) -> dict[str, Any]:
        """The coherence signals this model offers the governor, by name: each a
        :class:`~polysteer.steering.governor.CoherenceSignal` (a module and a tensor read-out per
        forward pass). Default: none (the core ``activation`` signal works on every model)."""
        return {}

    def replay(self, generation: Generation) -> torch.Tensor | None:
        """Run the model once over a generation's outputs (teacher forcing, one ``single`` step, so
        steering applies) and return its next-token logits ``(rows, positions, vocabulary)``; None
        for models without a next-token distribution (the default). The side-effect audit uses it
        for the KL per position."""
        return None

    # -- provided -------------------------------------------------------------------------------
    @functools.cached_property
    def model_fingerprint(self) -> ModelFingerprint:
        """The fingerprint dictionaries are checked against."""
        return fingerprint(self.model, self.name)

    def generate(self, inputs: Any, *, style: Any = None, intensity: Any = 1.0,
                 **kwargs: Any) -> Generation:
        """Generate, optionally under ``style`` at ``intensity``; observers are notified.

        Returns the :class:`~polysteer.steering.generation.Generation` record, its ``steps`` filled with
        the forward passes this generation announced. With a style this is a shortcut for
        ``with polysteer.steer(adapter, style, intensity):``.
        """
        if style is not None:
            from polysteer.steering.runtime import steer

            with steer(self, style, intensity):
                return self.generate(inputs, **kwargs)
        from polysteer.plugin.manager import current_plugin_manager

        plugins = current_plugin_manager()
        hook = plugins.hook
        hook.polysteer_before_generate(adapter=self, inputs=inputs, options=kwargs)
        recorder = StepClock(plugins.phases())  # this generation's steps for the record, steered or not
        try:
            with self.attached(recorder):
                record = as_generation(self.run_generation(inputs, **kwargs), modality=self.modality,
                                       model=self.name)
        except Exception as error:
            hook.polysteer_on_error(adapter=self, error=error)
            raise
        finally:
            for clock in self.attached_clocks:  # a later direct forward pass is not this generation's
                clock.current = None
        record.steps = tuple(recorder.history)
        hook.polysteer_after_generate(adapter=self, inputs=inputs, outputs=record)
        return record

    def begin_generation(self, total_steps: int | None) -> None:
        """Tell every attached clock that a generation of ``total_steps`` passes starts."""
        for clock in self.attached_clocks:
            clock.begin(total_steps)

    def advance_step(self, *, phase: str, offset: int = 0, new: int = 0, prompt_length: int = 0,
                     rows: RowMap | None = None, index: int | None = None,
                     progress: float | None = None, padding: torch.Tensor | None = None) -> None:
        """Announce the next forward pass to every attached clock (no-op when not steering).

        ``padding``: per row, how many leading positions are padding (left-padded batches), so
        rules and read-outs can leave them out; see :class:`~polysteer.steering.step.Step`.
        """
        for clock in self.attached_clocks:
            clock.advance(phase=phase, offset=offset, new=new, prompt_length=prompt_length,
                          rows=rows, index=index, progress=progress, padding=padding)

    @property
    def attached_clocks(self) -> tuple[StepClock, ...]:
        """The step clocks attached to this adapter in the current thread or asyncio task.

        Attachment is scoped like a context variable: a steering context opened in one thread
        never sees (or steers) a generation that another thread runs on the same model.
        """
        return _ATTACHED.get().get(id(self), ())

    @contextmanager
    def attached(self, clock: StepClock) -> Iterator[StepClock]:
        """Attach ``clock`` for the duration of a block, in the current context only (the runtime
        and :meth:`generate` do this)."""
        _ATTACHED.set({**_ATTACHED.get(), id(self): (*self.attached_clocks, clock)})
        try:
            yield clock
        finally:  # by removal, not by token, so blocks may close in any order
            rest = tuple(c for c in self.attached_clocks if c is not clock)
            others = {k: v for k, v in _ATTACHED.get().items() if k != id(self)}
            _ATTACHED.set({**others, id(self): rest} if rest else others)

    def scoped(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a forward hook installed for the generation now running so it acts only on that
        generation's forward passes, not on another thread's or task's on the same model.

        An adapter whose step clock advances from a module hook (a ``generate`` loop it does not
        own) installs it as ``module.register_forward_pre_hook(self.scoped(hook), ...)``.
        """
        clocks = self.attached_clocks

        def in_its_own_context(*args: Any, **kwargs: Any) -> Any:
            if self.attached_clocks is not clocks:
                return None  # another thread's or task's pass: leave it alone
            return hook(*args, **kwargs)

        return in_its_own_context

    def steer(self, style: Any, intensity: Any = 1.0, **kwargs: Any) -> Steering:
        """Shortcut for :func:`polysteer.steer` on this adapter."""
        from polysteer.steering.runtime import steer

        return steer(self, style, intensity, **kwargs)
