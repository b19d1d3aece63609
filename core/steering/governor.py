"""The coherence governor: back steering off, per sample, when a coherence signal leaves its range.

Steering pushed too hard makes a model leave the distribution it was trained on: text turns to
word salad, images to noise, speech to mumble. The governor watches a *coherence signal* while the
model generates and multiplies every steered component's weight by a per-sample *gain* in [floor, 1]:
when the signal of a sample leaves its range the gain is multiplied by ``backoff``; while it is in
range the gain climbs back by ``recover`` per step, up to 1. Batch rows are independent (rows of one
logical sample, e.g. the two halves of classifier-free guidance, share one gain).

Signals come in two kinds:

* an **adapter signal**, read at a module of the model on each forward pass and acting from the next
  pass: a plugin declares it in :meth:`~polysteer.ModelAdapter.coherence_signals` as a
  :class:`CoherenceSignal` (text: ``entropy`` of the next-token distribution, read at the LM head;
  image: ``noise``, the spread of the denoiser's prediction);
* the core **activation** signal, read at each steered site itself within the same pass: the mean
  norm of each row's steered activation in units of the site's typical norm; when it exceeds the
  range the row's change is scaled back right there (a one-pass model such as a VITS voice has no
  "next step" to act on).

The range is an explicit ``max`` (and/or ``min``) in the signal's units (a calibrated bound plugs in
here), or, by default, measured once per model from the unsteered model on the shipped neutral probes
(``configs/probes/<modality>.yaml``): the ``quantile`` and ``1 - quantile`` of the smoothed signal
over every step of those generations, per tenth of progress for adapter signals, widened by
``margin`` of their spread. The per-step work is tensor code only: no host synchronisation, no plugin
calls.

In a style (YAML)::

    governor: {signal: entropy, backoff: 0.5, recover: 0.1}   # bound measured on neutral probes
    governor: {signal: entropy, max: 3.2}                      # an explicit (calibrated) bound

or in Python ``ps.steer(model, style, 2.0, governor={"signal": "entropy"})``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from polysteer.errors import ConfigError, SteeringError, did_you_mean
from polysteer.steering.step import RowMap, Step

ACTIVATION = "activation"
"""The name of the core signal read at each steered site (works on every model)."""

BINS = 10
"""Adapter-signal ranges measured on probes are kept per tenth of generation progress."""


@dataclass(frozen=True)
class CoherenceSignal:
    """A coherence signal an adapter offers: read at ``module`` on every forward pass.

    Attributes:
        name: what styles call it (``governor: {signal: NAME}``).
        module: the module whose forward pass yields the signal.
        read: ``(args, output, step) -> (rows,)`` float tensor, one value per batch row of the pass
            (plain tensor code: it runs on every forward pass).
        description: what it measures, one line.
        two_sided: whether leaving the range downwards also means trouble (a measured default
            range then has a ``min`` too).
    """

    name: str
    module: torch.nn.Module
    read: Callable[[tuple, Any, Step], torch.Tensor]
    description: str = ""
    two_sided: bool = False


@dataclass(frozen=True)
class Governor:
    """Settings of the coherence governor (``governor:`` in a style, or ``steer(governor=...)``).

    Attributes:
        signal: a signal the model's adapter offers (``entropy`` for text, ``noise`` for image) or
            ``activation`` (every model); ``None``: the adapter's default.
        max: upper bound of the signal's range, in its units; ``None`` with ``min`` also ``None``:
            measured from the unsteered model on the neutral probes.
        min: lower bound (two-sided signals).
        backoff: the gain is multiplied by this on each step a sample is out of range (0..1).
        recover: added back to the gain on each step it is in range (up to 1).
        smooth: weight of the previous value in the signal's exponential moving average (0: none).
        floor: the lowest gain.
        quantile: the measured range keeps this upper (and lower) quantile of the probes' signal.
        margin: the measured range is widened by this fraction of its spread.
        at: measure the range under the style itself at this intensity (its calibrated, "strongest
            coherent" strength, e.g. 1.0) instead of on the unsteered model: the governor then keeps
            a stronger setting near the coherence of that one (use ``quantile: 0.5``: the typical
            level, so the average stays there).
    """

    signal: str | None = None
    max: float | None = None
    min: float | None = None
    backoff: float = 0.5
    recover: float = 0.1
    smooth: float = 0.5
    floor: float = 0.0
    quantile: float = 0.98
    margin: float = 0.1
    at: float | None = None

    def __post_init__(self) -> None:
        for name in ("backoff", "recover", "smooth", "floor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"governor.{name}: expected a number in [0, 1], got {value!r}")
        if self.smooth >= 1.0:
            raise ConfigError("governor.smooth: must be below 1 (1 would never read the signal)")
        if not 0.5 <= self.quantile < 1.0:
            raise ConfigError(f"governor.quantile: expected a number in [0.5, 1), got {self.quantile!r}")
        for name in ("max", "min", "margin", "at"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value)):
                raise ConfigError(f"governor.{name}: expected a finite number, got {value!r}")
        if self.max is not None and self.min is not None and self.min >= self.max:
            raise ConfigError(f"governor: min ({self.min}) must be below max ({self.max})")
        if self.signal is not None and not isinstance(self.signal, str):
            raise ConfigError(f"governor.signal: expected a signal name, got {self.signal!r}")

    @property
    def measured(self) -> bool:
        """Whether the range is measured on probes (no explicit bound)."""
        return self.max is None and self.min is None

    @staticmethod
    def parse(data: Any, path: str = "governor") -> Governor | None:
        """A governor from ``True``/``False``/``None``, a signal name, a mapping or a Governor."""
        if data is None or data is False:
            return None
        if isinstance(data, Governor):
            return data
        if data is True:
            return Governor()
        if isinstance(data, str):
            return Governor(signal=data)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping like {{signal: entropy, backoff: 0.5}}, "
                              f"got {data!r}")
        allowed = tuple(Governor.__dataclass_fields__)
        for key in data:
            if key not in allowed:
                raise ConfigError(f"{path}.{key}: unknown key.{did_you_mean(str(key), allowed)} "
                                  f"Allowed keys are {', '.join(allowed)}")
        try:
            return Governor(**data)
        except ConfigError as err:
            raise ConfigError(str(err).replace("governor", path, 1)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML: only the settings that differ from the defaults."""
        default = Governor()
        return {k: v for k, v in asdict(self).items() if v != getattr(default, k)} or {"signal": None}


# -- ranges ---------------------------------------------------------------------------------------
@dataclass
class SignalRange:
    """The range of a signal: ``lo``/``hi`` tensors of ``bins`` values (one per slice of progress;
    one value for a constant range); ``-inf``/``inf`` where unbounded."""

    lo: torch.Tensor
    hi: torch.Tensor
    source: str = "explicit"
    norm: float = 1.0  # the activation signal: the site norm its values are divided by
    _cache: dict = field(default_factory=dict, repr=False)

    @staticmethod
    def constant(lo: float | None, hi: float | None, source: str = "explicit") -> SignalRange:
        return SignalRange(torch.tensor([-math.inf if lo is None else float(lo)]),
                           torch.tensor([math.inf if hi is None else float(hi)]), source)

    def at(self, progress: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The bounds that hold at ``progress`` (0-d tensors on ``device``)."""
        i = min(int(progress * len(self.hi)), len(self.hi) - 1)
        key = (i, device)
        if key not in self._cache:
            self._cache[key] = (self.lo[i].to(device), self.hi[i].to(device))
        return self._cache[key]

    def describe(self) -> dict[str, Any]:
        """The range as plain data (for reports)."""
        def clean(t: torch.Tensor) -> list[float | None]:
            return [None if not math.isfinite(v) else round(v, 4) for v in t.tolist()]
        return {"min": clean(self.lo), "max": clean(self.hi), "source": self.source}


def range_from_values(values: torch.Tensor, progress: torch.Tensor, governor: Governor,
                      two_sided: bool, bins: int = BINS, source: str = "neutral probes") -> SignalRange:
    """The measured range of ``values`` (one per step and row) at ``progress``: the governor's
    quantiles per slice of progress (the whole set where a slice has too few values), widened."""
    values, progress = values.float().flatten(), progress.float().flatten()
    keep = torch.isfinite(values)
    values, progress = values[keep], progress[keep]
    if not len(values):
        raise SteeringError("the coherence signal gave no finite value on the neutral probes; give "
                            "the governor an explicit max")
    q = governor.quantile

    def bounds(v: torch.Tensor) -> tuple[float, float]:
        lo, hi = float(torch.quantile(v, 1 - q)), float(torch.quantile(v, q))
        pad = governor.margin * max(hi - lo, 1e-6 * max(abs(hi), 1.0))
        return lo - pad, hi + pad

    overall = bounds(values)
    los, his = [], []
    for b in range(bins):
        inside = (progress >= b / bins) & ((progress < (b + 1) / bins) | (b == bins - 1))
        lo, hi = bounds(values[inside]) if int(inside.sum()) >= 8 else overall
        los.append(lo if two_sided else -math.inf)
        his.append(hi)
    return SignalRange(torch.tensor(los), torch.tensor(his), source)


# -- per-generation state -------------------------------------------------------------------------
@dataclass
class GovernorState:
    """The governor of one steering context: its settings, range, and per-sample gain.

    ``observe`` (adapter signals) updates the gain after a forward pass; ``gain_rows`` gives the
    ``(rows,)`` factor the next pass's components use; ``limit`` (the activation signal) scales a
    site's change back within the pass. ``trace`` keeps, per generation and step, the signal and the
    gain (tensors, read only when asked for).
    """

    governor: Governor
    signal_name: str
    signal: CoherenceSignal | None
    ranges: dict[str, SignalRange] = field(default_factory=dict)  # "" for an adapter signal, else per site
    gain: torch.Tensor | None = None
    ema: torch.Tensor | None = None
    generation: int = -1
    trace: list[list[tuple[int, torch.Tensor, torch.Tensor]]] = field(default_factory=list)
    _rows_key: Any = None
    _rows_index: torch.Tensor | None = None

    def _fresh(self, generation: int, rows: RowMap, device: torch.device) -> None:
        if generation != self.generation or self.gain is None or len(self.gain) != rows.samples \
                or self.ema is None or len(self.ema) != rows.rows:
            self.generation = generation
            self.gain = torch.ones(rows.samples, device=device)
            self.ema = None
            self.trace.append([])

    def _index(self, rows: RowMap, device: torch.device) -> torch.Tensor:
        if not rows.same_as(self._rows_key) or self._rows_index is None or \
                self._rows_index.device != device:
            self._rows_key, self._rows_index = rows, rows.sample.to(device)
        return self._rows_index

    def _smoothed(self, value: torch.Tensor) -> torch.Tensor:
        a = self.governor.smooth
        if self.ema is None or len(self.ema) != len(value) or a == 0.0:
            self.ema = value
        else:
            self.ema = a * self.ema + (1 - a) * value
        return self.ema

    def _update(self, out_of_range_rows: torch.Tensor, rows: RowMap, device: torch.device) -> None:
        index = self._index(rows, device)
        out = torch.zeros(rows.samples, device=device).index_add_(
            0, index, out_of_range_rows.float()) > 0
        g = self.governor
        self.gain = torch.where(out, (self.gain * g.backoff).clamp_min(g.floor),
                                (self.gain + g.recover).clamp_max(1.0))

    def observe(self, value: torch.Tensor, step: Step, generation: int) -> None:
        """Take an adapter signal's ``(rows,)`` value after a forward pass of ``step``."""
        device = value.device
        self._fresh(generation, step.rows, device)
        if step.rows.rows != len(value):
            return  # a pass of another shape (e.g. one branch only): leave the gain as it is
        smoothed = self._smoothed(value.detach().float())
        lo, hi = self.ranges[""].at(step.progress, device)
        self._update((smoothed > hi) | (smoothed < lo), step.rows, device)
        self.trace[-1].append((step.index, smoothed, self.gain))

    def gain_rows(self, rows: RowMap, device: torch.device, generation: int) -> torch.Tensor | None:
        """``(rows,)`` gain for this pass's components, or None before any signal of this generation."""
        if self.signal is None or self.gain is None or generation != self.generation \
                or len(self.gain) != rows.samples:
            return None
        return self.gain.to(device)[self._index(rows, device)]

    def limit(self, site: str, x: torch.Tensor, y: torch.Tensor, step: Step, generation: int
              ) -> torch.Tensor:
        """The activation signal at ``site``: scale each row's change ``y - x`` back, within this
        pass, so the row's mean token norm (in site norms) stays at or under the range's top."""
        bound = self.ranges.get(site)
        if bound is None:
            return y
        device = y.device
        if generation != self.generation:
            self.generation = generation
            self.trace.append([])
        yn = y.float().norm(dim=-1).mean(dim=1)
        xn = x.float().norm(dim=-1).mean(dim=1)
        _, hi = bound.at(step.progress, device)
        over = yn > hi * bound.norm
        # the share of the change that brings the mean norm back to the bound (norms are close to
        # linear along one change, so one solve lands within a few percent of it)
        fit = ((hi * bound.norm - xn) / (yn - xn).clamp_min(1e-6)).clamp(0.0, 1.0)
        g = torch.where(over, fit, torch.ones_like(fit))
        self.trace[-1].append((step.index, yn / bound.norm, g))
        return x + g.to(y.dtype)[:, None, None] * (y - x)

    def report(self) -> list[dict[str, Any]]:
        """Per generation, per step: the smoothed signal and the gain of each row/sample."""
        out = []
        for g, steps in enumerate(self.trace):
            for index, signal, gain in steps:
                out.append({"generation": g, "step": index, "signal": signal.tolist(),
                            "gain": gain.tolist()})
        return out


# -- measured ranges ------------------------------------------------------------------------------
_MEASURED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def neutral_probes(modality: str) -> dict[str, Any]:
    """The shipped neutral probes of ``modality``: ``{"inputs": ..., "generate": {...}}`` from
    ``configs/probes/<modality>.yaml`` (empty inputs if polysteer ships none for it)."""
    from polysteer.io.paths import configs_dir
    from polysteer.io.safeload import load_yaml

    path = configs_dir() / "probes" / f"{modality}.yaml"
    if not path.is_file():
        return {"inputs": None, "generate": {}}
    data = load_yaml(path, "probe file") or {}
    return {"inputs": data.get("inputs"), "generate": dict(data.get("generate") or {})}


def probe_inputs(adapter: Any) -> tuple[Any, dict[str, Any]]:
    """``(inputs, generate options)`` of the neutral probes for ``adapter``: the shipped probes of
    its modality, or, when the model cannot take them (the token-id ``reference`` model), its own
    default inputs (``prepare_inputs(None)``)."""
    probes = neutral_probes(adapter.modality)
    try:
        return adapter.prepare_inputs(probes["inputs"]), probes["generate"]
    except (TypeError, ValueError):
        return adapter.prepare_inputs(None), {}


def measure_signal(adapter: Any, signal: CoherenceSignal, inputs: Any, generate: dict[str, Any]
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Read ``signal`` over an unsteered generation of ``inputs``: ``(values, progress)``, one
    ``(rows,)`` tensor of each per forward pass (values unsmoothed)."""
    from polysteer.steering.step import StepClock

    clock = StepClock()
    values, progress = [], []

    def hook(module, args, output):
        step = clock.current
        if step is not None:
            v = signal.read(args, output, step).detach().float().cpu()
            values.append(v)
            progress.append(torch.full_like(v, step.progress))

    handle = signal.module.register_forward_hook(hook)
    try:
        with adapter.attached(clock):
            adapter.generate(inputs, **generate)
    finally:
        handle.remove()
    if not values:
        raise SteeringError(f"signal {signal.name!r} was never read during a generation: its "
                            "module did not run")
    return values, progress


def measured_range(adapter: Any, signal: CoherenceSignal, governor: Governor,
                   styles: Any = None) -> SignalRange:
    """The range of an adapter signal on the neutral probes: on the unsteered model, or with
    ``governor.at`` under ``styles`` (a list of ``(style, intensity)`` pairs; each intensity is
    replaced by ``at``); measured once per model, settings and styles, then reused."""
    from polysteer.steering.runtime import steer

    at = governor.at
    key = (signal.name, governor.smooth, governor.quantile, governor.margin, at,
           tuple(id(s) for s, _ in styles or ()) if at is not None else ())
    cache = _MEASURED.setdefault(adapter.model, {})
    if key not in cache:
        inputs, options = probe_inputs(adapter)
        if at is None:
            values, progress = measure_signal(adapter, signal, inputs, options)
        else:
            with steer(adapter, [(s, at) for s, _ in styles]):
                values, progress = measure_signal(adapter, signal, inputs, options)
        smoothed, ema = [], None
        for v in values:  # the same moving average the governor reads
            a = governor.smooth
            ema = v if ema is None or len(ema) != len(v) else a * ema + (1 - a) * v
            smoothed.append(ema)
        cache[key] = range_from_values(torch.cat(smoothed), torch.cat(progress), governor,
                                       signal.two_sided, source="neutral probes" if at is None else
                                       f"neutral probes under the style at intensity {at:g}")
    return cache[key]


def measured_site_range(adapter: Any, site: str, governor: Governor, site_norm: float) -> SignalRange:
    """The range of the activation signal at ``site`` (mean token norm per row, in site norms) on
    the unsteered model's neutral probes."""
    from polysteer.steering.runtime import steer

    key = (ACTIVATION, site, governor.quantile, governor.margin)
    cache = _MEASURED.setdefault(adapter.model, {})
    if key not in cache:
        inputs, options = probe_inputs(adapter)
        with steer(adapter, None, capture=[site]) as run:
            adapter.generate(inputs, **options)
        acts = run.captured(site)
        acts = acts.flatten(0, 1) if acts.ndim == 4 else acts
        norms = acts.float().norm(dim=-1).mean(dim=1) / site_norm
        cache[key] = range_from_values(norms, torch.zeros_like(norms), governor, False, bins=1)
    bound = cache[key]
    return SignalRange(bound.lo, bound.hi, bound.source, norm=site_norm)


def resolve_signal(adapter: Any, governor: Governor) -> tuple[str, CoherenceSignal | None]:
    """The signal a governor reads on ``adapter``: ``(name, adapter signal or None for activation)``."""
    offered = adapter.coherence_signals()
    name = governor.signal or adapter.default_coherence_signal or ACTIVATION
    if name == ACTIVATION:
        return name, None
    if name not in offered:
        names = [*offered, ACTIVATION]
        raise SteeringError(f"governor signal {name!r} is not offered by {adapter.name} "
                            f"({adapter.modality}).{did_you_mean(name, names)} It offers: "
                            f"{', '.join(names)}")
    return name, offered[name]

