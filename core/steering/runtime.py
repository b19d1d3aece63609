"""The steering runtime: one context manager that installs every hook a style needs.

``with steer(adapter, style, intensity=0.8) as run:`` resolves everything once (realisations for
the model's modality, dictionaries, feature ids, intervention, schedule and mask factories from the
plugin registries), checks every dictionary against the model's fingerprint and site, attaches a
:class:`~polysteer.steering.step.StepClock` to the adapter and installs one hook per site. On exit (also
after an exception) every hook is removed.

Per forward pass, a site hook does only tensor work: read the activation as ``(B, P, C)``, feed rule
read-outs, and for each component compute its weight (intensity x weight x envelope(progress) x
rule gate x row selection x position mask) and apply its intervention. No plugin calls, no Python
loop over positions.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from polysteer.config import MAX_INTENSITY
from polysteer.errors import ConfigError, PolysteerError, RegistryError, SteeringError
from polysteer.features.classifier import OUTLIER_FACTOR, StreamingScore, resolve_classifier
from polysteer.features.dictionary import FeatureDictionary, resolve_dictionary
from polysteer.plugin.manager import PluginManager, current_plugin_manager
from polysteer.steering.adapter import ModelAdapter, SiteBinding
from polysteer.steering.calibration import calibrated_style
from polysteer.steering.governor import (
    Governor,
    GovernorState,
    SignalRange,
    measured_range,
    measured_site_range,
    resolve_signal,
)
from polysteer.steering.layout import is_spatial
from polysteer.steering.sites import UnknownSiteError
from polysteer.steering.step import RowMap, Step, StepClock
from polysteer.steering.style import Component, Rule, Style, load_style


class SteeringWarning(UserWarning):
    """Some components of a style did not apply to this model."""


Intensity = float | Sequence[float]
"""One intensity for every sample, or one per logical sample of the batch."""


# -- compiled pieces -----------------------------------------------------------------------------
def _check_intensity(value: Any, what: str = "intensity") -> torch.Tensor | float:
    """A float, or a ``(samples,)`` tensor of per-sample intensities; finite numbers only."""
    if isinstance(value, str | bytes) or value is None:
        raise SteeringError(f"{what} must be a finite number like 0.5 (or one per sample), "
                            f"got {value!r}")
    try:
        values = torch.as_tensor(value, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise SteeringError(f"{what} must be a finite number like 0.5 (or one per sample), "
                            f"got {value!r}") from None
    if isinstance(value, bool) or not torch.isfinite(values).all():
        raise SteeringError(f"{what} must be a finite number like 0.5 (or one per sample), "
                            f"got {value!r}")
    if values.numel() and float(values.abs().max()) > MAX_INTENSITY:
        raise SteeringError(f"{what} {value!r} is out of range: use values between "
                            f"{-MAX_INTENSITY:g} and {MAX_INTENSITY:g} (1.0 is a typical "
                            "token's norm at the site)")
    if isinstance(value, int | float) or getattr(value, "ndim", None) == 0:  # incl. numpy scalars
        return float(values[0])
    return values.float()


def on_device(dictionary: FeatureDictionary, device: torch.device) -> FeatureDictionary:
    """``dictionary`` on ``device``: itself if it is there, else a moved copy (dictionaries are shared,
    e.g. cached by name or held by a style, and one model's device must not move another's)."""
    if dictionary.device == device:
        return dictionary
    return copy.deepcopy(dictionary).to(device)


@dataclass
class _RuleState:
    """A compiled rule: per-row counters, updated with tensor ops only."""

    rule: Rule
    dictionary: FeatureDictionary | None
    feature: int = -1  # the feature a feature rule reads (classifier rules read their classifier)
    scale: float = 1.0
    count: torch.Tensor | None = None
    remaining: torch.Tensor | None = None
    active: torch.Tensor | None = None
    events: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    def reset(self, rows: int, device: torch.device) -> None:
        self.count = torch.zeros(rows, device=device)
        self.remaining = torch.zeros(rows, device=device)
        self.active = torch.zeros(rows, dtype=torch.bool, device=device)

    def is_active(self, rows: int, device: torch.device) -> torch.Tensor:
        """Whether the rule's action holds for each row in this step (False before any step)."""
        if self.active is None or len(self.active) != rows:
            return torch.zeros(rows, dtype=torch.bool, device=device)
        return self.active.to(device)

    def on_advance(self, step: Step) -> None:
        if step.index == 0 or self.remaining is None or len(self.remaining) != step.rows.rows:
            self.reset(step.rows.rows, self.remaining.device if self.remaining is not None
                       else torch.device("cpu"))
        self.active = self.remaining > 0
        self.remaining = self.remaining - 1

    def read(self, new: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        """The ``(B,)`` read-out of this step's new positions (``real``: which are not padding)."""
        value = self.dictionary.encode(new)[..., self.feature] / self.scale
        # attention sinks (norms far above the site's typical norm) read huge on any direction
        skip = new.norm(dim=-1) > OUTLIER_FACTOR * self.dictionary.info.site_norm
        if real is not None:
            skip = skip | ~real
        return value.masked_fill(skip, -math.inf).amax(dim=1)

    def observe(self, x: torch.Tensor, step: Step) -> None:
        if self.count is None or len(self.count) != x.shape[0] or self.count.device != x.device:
            self.reset(x.shape[0], x.device)
        new = x[:, -step.new:] if step.new else x
        real = step.real_positions(new.shape[1], x.shape[1])
        above = self.read(new, None if real is None else real.to(x.device)) > self.rule.above
        self.count = (self.count + 1) * above
        fired = self.count >= self.rule.for_steps
        hold = float(self.rule.steps) if self.rule.steps is not None else math.inf
        self.remaining = torch.where(fired, torch.full_like(self.remaining, hold), self.remaining)
        self.events.append((step.index, fired))


@dataclass
class _ClassifierRuleState(_RuleState):
    """A rule read by a classifier: its probability over every position of the generation so far."""

    stream: StreamingScore | None = None

    def reset(self, rows: int, device: torch.device) -> None:
        super().reset(rows, device)
        if self.stream is not None:
            self.stream.reset(rows, device)

    def read(self, new: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        return self.stream.update(new, real)


@dataclass
class _Compiled:
    """A component ready for the hot path."""

    name: str
    intervention: Any
    envelope: Any
    mask: Any
    weight: float
    intensity: float | torch.Tensor
    branches: tuple[str, ...] | None
    enabled: bool
    apply_rules: list[_RuleState] = field(default_factory=list)
    stop_rules: list[_RuleState] = field(default_factory=list)
    _rows_key: Any = None
    _rows_weight: torch.Tensor | None = None

    def scalar(self, progress: float) -> float:
        scale = self.intensity if isinstance(self.intensity, float) else 1.0
        return scale * self.weight * self.envelope(progress)

    def row_weights(self, rows: RowMap, x: torch.Tensor) -> torch.Tensor | None:
        """``(B, 1, 1)`` per-row factor (per-sample intensity, branch, rule gate) or None."""
        if not rows.same_as(self._rows_key) or self._rows_weight is None or \
                self._rows_weight.device != x.device:
            self._rows_key, self._rows_weight = rows, self._static_rows(rows, x.device)
        base = self._rows_weight if self._rows_weight.numel() else None
        if self.apply_rules or self.stop_rules or not self.enabled:
            gate = self._gate(rows.rows, x.device)
            base = gate if base is None else base * gate
        return None if base is None else base.to(x.dtype)[:, None, None]

    def _gate(self, n: int, device: torch.device) -> torch.Tensor:
        """1 where the component is on: enabled unless a stop rule holds, or an apply rule holds."""
        gate = torch.full((n,), float(self.enabled), device=device)
        for rule in self.stop_rules:
            gate = gate * ~rule.is_active(n, device)
        for rule in self.apply_rules:
            gate = torch.where(rule.is_active(n, device), 1.0, gate)
        return gate

    def _static_rows(self, rows: RowMap, device: torch.device) -> torch.Tensor:
        """Per-sample intensity and branch selection, ``(rows,)``; empty when neither applies."""
        factor = torch.empty(0, device=device)
        if isinstance(self.intensity, torch.Tensor):
            if rows.samples > len(self.intensity):
                raise SteeringError(f"{len(self.intensity)} intensities given for a batch of "
                                    f"{rows.samples} samples: give one per sample")
            factor = self.intensity[rows.sample].to(device)
        if self.branches is not None:
            mask = rows.branch_mask(self.branches).to(device, torch.float32)
            factor = mask if not factor.numel() else factor * mask
        return factor


@dataclass
class _SiteHook:
    """Everything that happens at one site."""

    site: str
    binding: SiteBinding
    clock: StepClock
    adapter: ModelAdapter
    components: list[_Compiled] = field(default_factory=list)
    rules: list[_RuleState] = field(default_factory=list)
    captures: list[tuple[int, torch.Tensor]] | None = None
    site_norm: float = 1.0  # the typical norm of the site (from its first dictionary)
    governor: GovernorState | None = None

    def __call__(self, native: Any) -> Any:
        if self.clock not in self.adapter.attached_clocks:
            return native  # another thread's or task's forward pass on the same model
        x = self.binding.layout.read(native)
        step = self.clock.current or self.clock.implicit_step(x.shape[0], x.shape[1])
        for rule in self.rules:
            rule.observe(x, step)
        y = x
        gain = None
        if self.governor is not None and self.governor.signal is not None:
            gain = self.governor.gain_rows(step.rows, x.device, len(self.clock.generations) - 1)
        for comp in self.components:
            s = comp.scalar(step.progress)
            if s == 0.0:
                continue
            rows = comp.row_weights(step.rows, x)
            w = s if rows is None else rows * s
            if gain is not None:
                w = gain.to(x.dtype)[:, None, None] * w
            mask = comp.mask(step, x.shape[1], self.binding.layout.grid(native), x.device)
            if mask is not None:
                w = mask.to(x.dtype)[None, :, None] * w
            y = comp.intervention.apply(y, w)
        if y is not x and self.governor is not None and self.governor.signal is None:
            y = self.governor.limit(self.site, x, y, step, len(self.clock.generations) - 1)
        if self.captures is not None:
            generation = len(self.clock.generations) - 1
            self.captures.append((generation, (y[:, -step.new:] if step.new else y).detach()))
        return native if y is x else self.binding.layout.write(native, y)


class Steering:
    """A steering context: see :func:`steer`.

    Attributes after entering:
        applied: names of the components that apply to this model.
        not_applied: ``(component, reason)`` for each component that does not (a concept without
            a realisation for this modality, a dictionary made on a model of another modality,
            a rule whose target did not apply) and for each setting left out (``name.positions``:
            a spatial region on a sequence site); warned about once, as one
            :class:`SteeringWarning`, when the context opens. ``skipped`` is the same list.
        clock: the step clock (``clock.history`` lists every Step of the generation).
        calibrations: style name -> the :class:`~polysteer.steering.calibration.Calibration` whose
            scale multiplied that style's intensity (see :mod:`polysteer.steering.calibration`).
    """

    def __init__(self, adapter: ModelAdapter, style: Style | Sequence[tuple[Style, Intensity]] | None,
                 intensity: Intensity = 1.0, *, capture: Sequence[str] = (),
                 plugins: PluginManager | None = None, governor: Any = None):
        self.adapter = adapter
        if style is None:
            pairs: list[tuple[Style, Intensity]] = []
        elif isinstance(style, Style):
            pairs = [(style, intensity)]
        else:
            pairs = list(style)
        self.pairs = [(load_style(s) if isinstance(s, str | Path) else s, _check_intensity(i))
                      for s, i in pairs]
        self.capture_sites = list(capture)
        self.plugins = plugins
        self._governor_spec = governor
        self.governor: GovernorState | None = None
        self.clock = StepClock((plugins or current_plugin_manager()).phases())
        self.applied: list[str] = []
        self.not_applied: list[tuple[str, str]] = []
        self.calibrations: dict[str, Any] = {}  # style name -> the Calibration applied
        self._hooks: dict[str, _SiteHook] = {}
        self._handles: list[Any] = []
        self._attached = None
        self._entered = False

    # -- resolution (once, when the context opens) ----------------------------------------------
    def _site_hook(self, site: str) -> _SiteHook:
        if site not in self._hooks:
            binding = self.adapter.bind(site)
            self._hooks[site] = _SiteHook(site, binding, self.clock, self.adapter)
        return self._hooks[site]

    def _dictionary(self, ref: Any, style: Style) -> tuple[FeatureDictionary, _SiteHook]:
        dictionary = resolve_dictionary(ref, style.base_dir, self.plugins)
        hook = self._site_hook(dictionary.info.site)
        dictionary.check_compatible(self.adapter.model_fingerprint, dictionary.info.site,
                                    hook.binding.channels)
        if not hook.components and dictionary.info.site_norm:
            hook.site_norm = float(dictionary.info.site_norm)
        return on_device(dictionary, self._device()), hook

    def _device(self) -> torch.device:
        return next(iter(self.adapter.model.parameters()), torch.empty(0)).device

    def _skip(self, name: str, reason: str) -> None:
        self.not_applied.append((name, reason))

    def _foreign(self, dictionary_ref: Any, style: Style) -> tuple[FeatureDictionary | None, str]:
        """The dictionary, or ``None`` and why it belongs to another model: made on a model of
        another architecture at a site this model lacks (a text dictionary in a style applied to an
        image model, say). A dictionary of this model's architecture always applies (or errors)."""
        dictionary = resolve_dictionary(dictionary_ref, style.base_dir, self.plugins)
        site = dictionary.info.site
        made_on = dictionary.info.model
        mine = self.adapter.model_fingerprint
        if made_on is None or mine is None or made_on.architecture == mine.architecture:
            return dictionary, ""  # made for this model: a site it lacks is an error, raised later
        try:
            self._site_hook(site)
            return dictionary, ""  # the site exists: check_compatible names the mismatch
        except UnknownSiteError:
            pass
        made_on = made_on.short()
        return None, (f"its dictionary {dictionary.describe()} was made on {made_on} at site "
                      f"{site!r}, which this {self.adapter.modality} model does not have")

    def _compile_component(self, comp: Component, style: Style, intensity, plugins: PluginManager
                           ) -> tuple[_SiteHook, _Compiled] | None:
        dictionary_ref, feature, weight = comp.dictionary, comp.feature, comp.weight
        settings = {"intervention": comp.intervention, "options": comp.options,
                    "schedule": comp.schedule, "positions": comp.positions,
                    "branches": comp.branches}
        overridden: set[str] = set()
        if comp.concept is not None:
            realisations = style.concepts[comp.concept]
            real = realisations.get(self.adapter.modality)
            if real is None:
                self._skip(comp.name, (
                    f"concept {comp.concept!r} has no {self.adapter.modality} realisation "
                    f"(it has: {', '.join(sorted(realisations))})"))
                return None
            dictionary_ref, feature, weight = real.dictionary, real.feature, weight * real.weight
            overrides = real.overrides()
            settings.update(overrides)
            overridden = set(overrides)
        dictionary, why = self._foreign(dictionary_ref, style)
        if dictionary is None:
            self._skip(comp.name, why)
            return None
        dictionary, hook = self._dictionary(dictionary, style)
        index = dictionary.feature_index(feature)
        where = f"component {comp.name!r} of style {style.name!r}"
        try:
            factory = plugins.interventions.get(settings["intervention"])
        except RegistryError as err:
            raise SteeringError(f"{where}: intervention: {err}") from None
        envelope = _build(plugins.schedules, settings["schedule"], f"{where}: schedule")
        mask = _build(plugins.position_masks, settings["positions"], f"{where}: positions")
        if getattr(mask, "needs_grid", False) and is_spatial(hook.binding.layout) is False:
            if comp.concept is None or "positions" in overridden:
                raise SteeringError(
                    f"{where}: positions kind {settings['positions']['kind']!r} needs a spatial "
                    f"site (an image block), but {hook.site!r} of this {self.adapter.modality} "
                    "model is a sequence: use 'span', 'prompt' or 'generated' here")
            # a region written on a cross-modal concept's component is for its image realisation
            self._skip(f"{comp.name}.positions", (
                f"positions {settings['positions']} needs a spatial site; on this "
                f"{self.adapter.modality} model the concept acts on every position (give the "
                "region to the image realisation instead)"))
            mask = _build(plugins.position_masks, {"kind": "all"}, f"{where}: positions")
        try:
            intervention = factory(dictionary, index, dict(settings["options"]))
        except (ValueError, TypeError) as err:
            raise SteeringError(f"{where}: {err}") from err
        return hook, _Compiled(comp.name, intervention, envelope, mask, weight, intensity,
                               settings["branches"], comp.enabled)

    def _compile(self) -> None:
        plugins = self.plugins or current_plugin_manager()
        for style, intensity in self.pairs:
            # a calibrated style: intensity 1.0 = its measured strongest coherent setting
            style, calibration = calibrated_style(style, self.adapter.model_fingerprint)
            if calibration is not None:
                self.calibrations[style.name] = calibration
            compiled: dict[str, _Compiled] = {}
            for comp in style.components:
                result = self._compile_component(comp, style, intensity, plugins)
                if result is not None:
                    hook, c = result
                    hook.components.append(c)
                    compiled[comp.name] = c
                    self.applied.append(comp.name)
            for rule in style.rules:
                self._compile_rule(rule, style, compiled)
        for site in self.capture_sites:
            self._site_hook(site).captures = []
        self._compile_governor()
        if self.not_applied:
            lines = "; ".join(f"{name}: {why}" for name, why in self.not_applied)
            warnings.warn(f"not applied to {self.adapter.name} ({self.adapter.modality}): {lines}",
                          SteeringWarning, stacklevel=3)

    def _compile_governor(self) -> None:
        """Resolve the governor (``steer(governor=...)``, else the first style that has one): its
        signal and range (measured on the neutral probes when no bound is given)."""
        spec = Governor.parse(self._governor_spec, "steer(governor=...)")
        if spec is None:
            spec = next((s.governor for s, _ in self.pairs if s.governor is not None), None)
        if spec is None:
            return
        name, signal = resolve_signal(self.adapter, spec)
        state = GovernorState(spec, name, signal)
        steered = [h for h in self._hooks.values() if h.components]
        if signal is not None:
            state.ranges[""] = (SignalRange.constant(spec.min, spec.max) if not spec.measured
                                else measured_range(self.adapter, signal, spec, self.pairs))
        else:
            for hook in steered:
                state.ranges[hook.site] = (
                    SignalRange(*_pair(spec.min, spec.max), norm=hook.site_norm)
                    if not spec.measured else
                    measured_site_range(self.adapter, hook.site, spec, hook.site_norm))
        for hook in steered:
            hook.governor = state
        self.governor = state

    def _compile_rule(self, rule: Rule, style: Style, compiled: dict[str, _Compiled]) -> None:
        target = compiled.get(rule.target)
        if target is None:  # its component did not apply to this modality
            self.not_applied.append((rule.name or f"rule on {rule.target}",
                                     f"its target {rule.target!r} did not apply"))
            return
        if rule.classifier is not None:
            state, hook = self._classifier_rule(rule, style)
        else:
            dictionary, hook = self._dictionary(rule.dictionary, style)
            index = dictionary.feature_index(rule.feature)
            scale = float(dictionary.scales[index]) or 1.0
            state = _RuleState(rule, dictionary, index, scale)
        hook.rules.append(state)
        self.clock.on_advance(state.on_advance)
        (target.apply_rules if rule.action == "apply" else target.stop_rules).append(state)

    def _classifier_rule(self, rule: Rule, style: Style) -> tuple[_RuleState, _SiteHook]:
        classifier = resolve_classifier(rule.classifier, style.base_dir, self.plugins)
        hook = self._site_hook(classifier.site)
        classifier.check_compatible(self.adapter.model_fingerprint, classifier.site,
                                    hook.binding.channels)
        if classifier.dictionary is not None:
            classifier.dictionary.check_compatible(self.adapter.model_fingerprint, classifier.site,
                                                   hook.binding.channels)
            classifier = copy.copy(classifier)  # shallow: only its dictionary may be replaced
            classifier.dictionary = on_device(classifier.dictionary, self._device())
        return _ClassifierRuleState(rule, classifier.dictionary, stream=StreamingScore(classifier)), hook

    # -- installing hooks -----------------------------------------------------------------------
    def _install_signal(self) -> None:
        state, clock = self.governor, self.clock
        signal = state.signal

        def on_signal(_module, args, output):
            if clock in self.adapter.attached_clocks and clock.current is not None:
                state.observe(signal.read(args, output, clock.current), clock.current,
                              len(clock.generations) - 1)
        self._handles.append(signal.module.register_forward_hook(on_signal))

    def _install(self, hook: _SiteHook) -> None:
        b = hook.binding
        if b.hook == "output":
            handle = b.module.register_forward_hook(lambda _m, _a, out: hook(out))
        else:
            def pre(_module, args, kwargs):
                if len(args) > b.arg_index:
                    new = hook(args[b.arg_index])
                    return (*args[:b.arg_index], new, *args[b.arg_index + 1:]), kwargs
                if b.arg_name in kwargs:
                    return args, {**kwargs, b.arg_name: hook(kwargs[b.arg_name])}
                raise SteeringError(f"site {hook.site}: the module was called without its "
                                    f"input (argument {b.arg_index} / {b.arg_name!r})")
            handle = b.module.register_forward_pre_hook(pre, with_kwargs=True)
        self._handles.append(handle)

    def __enter__(self) -> Steering:
        if self._entered:
            raise SteeringError("a steering context can be entered once; call steer(...) again "
                                "for a new one")
        self._entered = True
        try:
            self._compile()
            for hook in self._hooks.values():
                if hook.components or hook.rules or hook.captures is not None:
                    self._install(hook)
            if self.governor is not None and self.governor.signal is not None:
                self._install_signal()
            # a forward pass nobody announced gets an implicit step; close it when the model returns
            self._handles.append(self.adapter.model.register_forward_hook(self._end_implicit))
            self._attached = self.adapter.attached(self.clock)
            self._attached.__enter__()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _end_implicit(self, *_: Any) -> None:
        if self.clock in self.adapter.attached_clocks:  # this context's pass, not another thread's
            self.clock.end_implicit()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._attached is not None:
            self._attached.__exit__(None, None, None)
            self._attached = None

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(component, reason)`` for everything of the style that does not apply to this model."""
        return list(self.not_applied)

    # -- results --------------------------------------------------------------------------------
    def captured(self, site: str, generation: int = -1) -> torch.Tensor:
        """Activations captured at ``site`` (after its interventions) in one generation.

        Only each step's new positions are kept. Steps of phases that extend one sequence (prefill,
        decode) are concatenated along positions, giving ``(B, P_total, C)``; a single pass gives
        ``(B, P, C)``; other phases (e.g. denoising) are stacked, giving ``(steps, B, P, C)``.
        ``generation`` counts the generations run inside this context (default: the latest).
        """
        hook = self._hooks.get(site)
        if hook is None or hook.captures is None:
            raise SteeringError(f"site {site!r} was not captured; pass capture=[{site!r}]")
        if not self.clock.generations or not hook.captures:
            raise SteeringError(f"nothing was captured at {site!r}: no forward pass ran")
        index = range(len(self.clock.generations))[generation]
        tensors = [t for g, t in hook.captures if g == index]
        steps = self.clock.generations[index]
        if all(self.clock.phases[s.phase].extends_sequence for s in steps) or len(tensors) == 1:
            return torch.cat(tensors, dim=1)
        return torch.stack(tensors)

    def governor_trace(self) -> list[dict[str, Any]]:
        """What the coherence governor saw and did: per generation and step, the smoothed signal
        per row and the gain per sample (adapter signals) or per row (``activation``, per site
        in order); empty without a governor."""
        return [] if self.governor is None else self.governor.report()

    def rule_events(self) -> list[dict[str, Any]]:
        """Each time a rule fired: ``{"rule", "step", "rows"}``."""
        events = []
        for hook in self._hooks.values():
            for rule in hook.rules:
                for index, fired in rule.events:
                    rows = torch.nonzero(fired).flatten().tolist()
                    if rows:
                        events.append({"rule": rule.rule.name or f"{rule.rule.action} "
                                       f"{rule.rule.target}", "step": index, "rows": rows})
        return sorted(events, key=lambda e: e["step"])


def _pair(lo: float | None, hi: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    bound = SignalRange.constant(lo, hi)
    return bound.lo, bound.hi


def _build(registry, spec: dict[str, Any], where: str):
    params = {k: v for k, v in spec.items() if k != "kind"}
    try:
        factory = registry.get(spec["kind"])
    except PolysteerError as err:
        raise ConfigError(f"{where}: {err}") from None
    try:
        return factory(**params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: bad parameters {params} for kind {spec['kind']!r} ({err})"
                          ) from None


def steer(adapter: ModelAdapter, style: Style | str | Path | Sequence[tuple[Style, Intensity]] | None,
          intensity: Intensity = 1.0, *, capture: Sequence[str] = (),
          plugins: PluginManager | None = None, governor: Any = None) -> Steering:
    """Steer ``adapter`` with ``style`` at ``intensity`` inside a ``with`` block.

    ``style`` is a :class:`Style`, a YAML file or shipped style name, ``None`` (only capture), or a list of
    ``(style, intensity)`` pairs (e.g. one style per batch row with per-sample intensities).
    ``intensity`` is one number or one per logical sample; 0 leaves outputs bit-identical.
    ``capture`` lists sites whose activations are recorded (see :meth:`Steering.captured`).
    ``governor`` switches on the coherence governor (a :class:`~polysteer.steering.governor.Governor`,
    a mapping like ``{"signal": "entropy", "max": 3.0}``, a signal name or ``True``) and overrides
    the styles' own ``governor:``; see :mod:`polysteer.steering.governor`.
    """
    if isinstance(style, str | Path):
        style = load_style(style)
    return Steering(adapter, style, intensity, capture=capture, plugins=plugins, governor=governor)
