"""The adapter conformance suite: the contracts every model adapter must keep.

Subclass :class:`AdapterConformance` in a test module (the class name must start with ``Test``)::

    class TestMyAdapter(AdapterConformance):
        generate_kwargs = {"max_new_tokens": 4}

        def make_adapter(self):
            return MyAdapter(...)

        def make_inputs(self):
            return ...

and pytest runs every check below against it: ``generate`` returns a consistent
:class:`~polysteer.steering.generation.Generation` record (and leaves no ``last*`` state on the adapter),
sites bind, captures are ``(B, P, C)``, zero intensity is bit-identical, a real intensity changes
outputs, every decode/denoise step is steered, hooks are removed after success and after an
exception, the step clock is monotonic, prefill/decode positions add up, and under classifier-free
guidance a style aimed at one branch touches only its rows.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from polysteer.errors import PolysteerError
from polysteer.features.concepts import direction_set, median_norm
from polysteer.plugin.manager import hookimpl
from polysteer.steering.adapter import ModelAdapter
from polysteer.steering.generation import Generation
from polysteer.steering.runtime import steer
from polysteer.steering.style import Style


def count_hooks(model: nn.Module) -> int:
    """Forward hooks and pre-hooks installed anywhere in ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def probe_style(adapter: ModelAdapter, site: str, inputs: Any, seed: int = 0,
                **component: Any) -> Style:
    """A one-component style adding a fixed random direction at ``site``.

    The direction's scale is the site's measured median norm, so intensity 1.0 is one typical
    token norm, as with a real concept.
    """
    with steer(adapter, None, capture=[site]) as run:
        adapter.generate(inputs)
    x = run.captured(site)
    norm = median_norm(x.flatten(0, 1) if x.ndim == 4 else x)
    channels = adapter.bind(site).channels
    direction = torch.randn(channels, generator=torch.Generator().manual_seed(seed))
    dictionary = direction_set([direction], ["probe"], site=site, site_norm=norm,
                               model=adapter.model_fingerprint, method="random-probe")
    style = Style.from_dict({"name": "probe", "components": [
        {"dictionary": "probe", "feature": "probe", **component}]})
    style.components[0].dictionary = dictionary
    return style


class _Explode:
    """An intervention kind that raises inside the forward pass."""

    @hookimpl
    def polysteer_register_interventions(self, registry):
        def explode(dictionary, feature, options):
            class Boom:
                def apply(self, x, w):
                    raise RuntimeError("conformance: intervention failed on purpose")
            return Boom()
        registry.register("conformance-explode", explode)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, Generation) and isinstance(b, Generation):
        return _equal(a.outputs, b.outputs)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


class AdapterConformance:
    """Subclass and implement :meth:`make_adapter` and :meth:`make_inputs`."""

    #: keyword arguments for ``adapter.generate`` (keep generation short: a few steps)
    generate_kwargs: dict[str, Any] = {}
    #: extra keyword arguments that switch on classifier-free guidance, or None if unsupported
    cfg_kwargs: dict[str, Any] | None = None
    #: an intensity strong enough to change outputs visibly
    strong_intensity: float = 4.0
    #: at most this many sites get the per-site capture check (all if None)
    max_sites_checked: int | None = 8

    # -- to implement ---------------------------------------------------------------------------
    def make_adapter(self) -> ModelAdapter:
        """A small adapter instance (random weights are fine)."""
        raise NotImplementedError

    def make_inputs(self) -> Any:
        """Inputs for a batch of at least two samples."""
        raise NotImplementedError

    def steering_site(self, adapter: ModelAdapter) -> str:
        """The site the steering checks use (default: the middle of ``sites()``)."""
        sites = adapter.sites()
        return sites[len(sites) // 2]

    def outputs_equal(self, a: Any, b: Any) -> bool:
        """Exact equality of two generations' outputs (tensors compared bit for bit)."""
        return _equal(a, b)

    # -- fixtures -------------------------------------------------------------------------------
    @pytest.fixture(autouse=True)
    def _polysteer_setup(self, plugin_manager):
        self.plugins = plugin_manager
        torch.manual_seed(0)
        self.adapter = self.make_adapter()
        self.inputs = self.make_inputs()
        self.site = self.steering_site(self.adapter)

    def _generate(self, **extra: Any) -> Generation:
        torch.manual_seed(0)
        return self.adapter.generate(self.inputs, **{**self.generate_kwargs, **extra})

    def _style(self, **component: Any) -> Style:
        return probe_style(self.adapter, self.site, self.inputs, **component)

    # -- the contracts --------------------------------------------------------------------------
    def test_generate_returns_a_consistent_record(self):
        with steer(self.adapter, None) as run:
            record = self._generate()
        assert isinstance(record, Generation), \
            f"generate() must return a polysteer.Generation, got {type(record).__name__}"
        record.check()
        assert record.modality == self.adapter.modality
        assert len(record) >= 2, "make_inputs() must give a batch of at least two samples"
        seen = [(s.index, s.phase, s.offset, s.new) for s in run.clock.history]
        assert [(s.index, s.phase, s.offset, s.new) for s in record.steps] == seen, \
            "the record's steps must be the forward passes the step clock saw"

    def test_records_are_independent_and_adapters_keep_no_last_state(self):
        """A baseline's record stays true after a steered run, and nothing about a generation is
        kept on the adapter (measures read the record, never ``adapter.last*``)."""
        plain = self._generate()
        kept = {name: (value.clone() if isinstance(value, torch.Tensor) else value)
                for name, value in vars(plain).items() if name != "steps"}
        with steer(self.adapter, self._style(), intensity=self.strong_intensity):
            self._generate()
        for name, value in kept.items():
            assert _equal(getattr(plain, name), value), \
                f"a later generation changed the earlier record's {name}: return fresh objects"
        left = sorted(name for name in vars(self.adapter) if name.startswith("last"))
        assert not left, f"the adapter keeps generation state {left}: put it in the Generation record"

    def test_sites_are_listed_and_bind(self):
        sites = self.adapter.sites()
        assert sites, "sites() must list at least one site"
        assert len(set(sites)) == len(sites), "site names must be unique"
        for site in sites:
            binding = self.adapter.bind(site)
            assert binding.channels > 0
            assert binding.hook in ("input", "output")

    def test_unknown_site_is_a_clear_error(self):
        with pytest.raises(PolysteerError, match="no.such.site"):
            self.adapter.bind("no.such.site")

    def test_capture_shapes_are_batch_positions_channels(self):
        sites = self.adapter.sites()[: self.max_sites_checked]
        with steer(self.adapter, None, capture=sites) as run:
            self._generate()
        for site in sites:
            x = run.captured(site)
            assert x.shape[-1] == self.adapter.bind(site).channels, site
            assert x.ndim in (3, 4), f"{site}: capture has shape {tuple(x.shape)}"
            assert x.shape[-3] == run.clock.history[0].rows.rows, \
                f"{site}: batch {x.shape[-3]} != rows of the step's row map"

    def test_zero_intensity_is_bit_identical(self):
        plain = self._generate()
        with steer(self.adapter, self._style(), intensity=0.0):
            steered = self._generate()
        assert self.outputs_equal(plain, steered), "intensity 0 must not change outputs at all"

    def test_nonzero_intensity_changes_outputs(self):
        plain = self._generate()
        with steer(self.adapter, self._style(), intensity=self.strong_intensity):
            steered = self._generate()
        assert not self.outputs_equal(plain, steered), \
            f"intensity {self.strong_intensity} at {self.site} changed nothing"

    def test_late_steps_are_steered(self):
        """Steering only the second half of generation still changes outputs (the clock moves).

        A one-pass adapter (a single ``single`` step, such as a VITS voice) has no later steps:
        there "late" is the second half of the positions (a ``span`` mask).
        """
        plain = self._generate()
        with steer(self.adapter, None) as probe:
            self._generate()
        one_pass = [s.phase for s in probe.clock.history] == ["single"]
        style = (self._style(positions={"kind": "span", "start": 0.5}) if one_pass
                 else self._style(schedule={"kind": "window", "start": 0.5, "end": 1.0}))
        with steer(self.adapter, style, intensity=self.strong_intensity) as run:
            steered = self._generate()
        assert one_pass or len(run.clock.history) > 1, "the adapter must advance the clock every pass"
        assert not self.outputs_equal(plain, steered), \
            "a component scheduled for the second half of generation (or of the positions, for a " \
            "one-pass model) changed nothing: are later steps (decode/denoise) steered?"

    def test_hooks_removed_after_success(self):
        before = count_hooks(self.adapter.model)
        with steer(self.adapter, self._style(), intensity=1.0, capture=[self.site]):
            self._generate()
            assert count_hooks(self.adapter.model) > before
        assert count_hooks(self.adapter.model) == before

    def test_hooks_removed_after_exception(self):
        before = count_hooks(self.adapter.model)
        style = self._style()
        with pytest.raises(KeyError), steer(self.adapter, style, intensity=1.0):
            raise KeyError("user code failed")
        assert count_hooks(self.adapter.model) == before
        self.plugins.register(_Explode(), "conformance-explode")
        style = self._style(intervention="conformance-explode")
        with pytest.raises(RuntimeError, match="on purpose"), \
                steer(self.adapter, style, intensity=1.0):
            self._generate()
        assert count_hooks(self.adapter.model) == before
        assert not self.adapter.attached_clocks, "the step clock must be detached on exit"

    def test_step_clock_is_monotonic(self):
        with steer(self.adapter, None, capture=[self.site]) as run:
            self._generate()
        history = run.clock.history
        assert history, "the adapter never advanced the step clock"
        assert [s.index for s in history] == list(range(len(history)))
        progress = [s.progress for s in history]
        assert progress == sorted(progress), f"progress went backwards: {progress}"
        assert all(0.0 <= p <= 1.0 for p in progress)
        if len(history) > 1:
            assert progress[-1] == 1.0, "the last step of a generation must reach progress 1.0"

    def test_prefill_decode_accounting(self):
        with steer(self.adapter, None, capture=[self.site]) as run:
            self._generate()
        history = run.clock.history
        phases = [s.phase for s in history]
        if phases[0] == "prefill":
            assert all(p == "decode" for p in phases[1:]), phases
            assert history[0].new >= 1 and all(s.new >= 1 for s in history)
            captured = run.captured(self.site)
            assert captured.shape[1] == sum(s.new for s in history), \
                "new positions announced by the steps do not add up to what the site saw"
        else:
            assert len(set(phases)) == 1, f"mixed phases {phases}"

    def test_generated_only_steering_leaves_the_prompt_alone(self):
        """Position accounting: a ``generated``-only component must not touch prompt positions."""
        with steer(self.adapter, None, capture=[self.site]) as plain_run:
            self._generate()
        if plain_run.clock.history[0].phase != "prefill":
            pytest.skip("no prompt/generated split for this adapter")
        style = self._style(positions="generated")
        with steer(self.adapter, style, intensity=self.strong_intensity, capture=[self.site]) as run:
            self._generate()
        prompt = run.clock.history[0].new  # the prefill's new positions are the prompt
        plain, steered = plain_run.captured(self.site), run.captured(self.site)
        assert torch.equal(plain[:, :prompt], steered[:, :prompt]), \
            "prompt positions changed: does the adapter report offset and prompt_length?"
        assert not torch.equal(plain[:, prompt:], steered[:, prompt:]), \
            "generated positions were not steered: does the adapter report offset under a cache?"

    def test_rows_match_the_batch(self):
        with steer(self.adapter, None, capture=[self.site]) as run:
            self._generate()
        x = run.captured(self.site)
        batch = x.shape[-3]
        assert all(s.rows.rows == batch for s in run.clock.history)

    def test_cfg_branch_touches_only_its_rows(self):
        if self.cfg_kwargs is None:
            pytest.skip("this adapter has no classifier-free guidance")
        with steer(self.adapter, None, capture=[self.site]) as plain_run:
            self._generate(**self.cfg_kwargs)
        style = self._style(branches=["uncond"])
        with steer(self.adapter, style, intensity=self.strong_intensity,
                   capture=[self.site]) as run:
            self._generate(**self.cfg_kwargs)
        rows = run.clock.history[0].rows
        assert "cond" in rows.branch and "uncond" in rows.branch, rows.branch
        first_plain = plain_run.captured(self.site)[..., : _first_len(plain_run), :]
        first = run.captured(self.site)[..., : _first_len(run), :]
        uncond = rows.branch_mask(("uncond",))
        if first.ndim == 4:  # stacked steps: compare the first step
            first_plain, first = first_plain[0], first[0]
        assert torch.equal(first[~uncond], first_plain[~uncond]), "cond rows were changed"
        assert not torch.equal(first[uncond], first_plain[uncond]), "uncond rows were not steered"


    # -- the coherence governor -----------------------------------------------------------------
    def test_governor_zero_intensity_is_identity_and_hooks_are_removed(self):
        """A governed style at intensity 0 is bit-identical to no steering, with every signal the
        adapter offers and the core ``activation`` signal; the signal's hook goes away on exit."""
        plain = self._generate()
        before = count_hooks(self.adapter.model)
        for signal in [*self.adapter.coherence_signals(), "activation"]:
            with steer(self.adapter, self._style(), intensity=0.0,
                       governor={"signal": signal, "max": 1e30}):
                steered = self._generate()
            assert self.outputs_equal(plain, steered), f"governor {signal!r}: intensity 0 changed outputs"
            assert count_hooks(self.adapter.model) == before, f"governor {signal!r} left a hook behind"

    def test_governor_backs_off_each_sample_on_its_own(self):
        """With a bound every value exceeds and ``backoff: 0``, the governor turns steering off for
        the steered sample (from the next pass for an adapter signal, in the same pass for
        ``activation``) and never touches a sample steered at 0 in the same batch."""
        plain = self._generate()
        samples = self.adapter.generate(self.inputs, **self.generate_kwargs).steps[0].rows.samples
        intensities = [self.strong_intensity] + [0.0] * (samples - 1)
        for signal in [*self.adapter.coherence_signals(), "activation"]:
            with steer(self.adapter, [(self._style(), intensities)],
                       governor={"signal": signal, "max": -1e30, "backoff": 0.0}) as run:
                governed = self._generate()
            trace = run.governor_trace()
            assert trace, f"governor {signal!r} never read its signal"
            assert all(g == 0.0 for g in trace[-1]["gain"][:1]), \
                f"governor {signal!r}: sample 0 was always out of range, yet its gain is {trace[-1]['gain']}"
            assert _equal(governed.rows()[1:], plain.rows()[1:]), \
                f"governor {signal!r}: a sample steered at 0 changed (rows must be independent)"
            if signal == "activation":
                assert self.outputs_equal(plain, governed), \
                    "the activation governor at a bound of 0 must undo every change in the pass"


def _first_len(run) -> int:
    step = run.clock.history[0]
    return step.new if step.phase == "prefill" else 10**9
