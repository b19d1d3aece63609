"""The adapter conformance suite fails, check by check, on adapters with the classic bugs.

Each broken adapter below subclasses the reference adapter and breaks one contract the way real
adapters get it wrong. The suite runs on them in a separate pytest process (as a plugin author
would run it), and exactly the checks guarding those contracts must fail; a control run on the
unbroken reference adapter must pass completely.
"""

from __future__ import annotations

import re

import pytest

from polysteer.testing import AdapterConformance

pytest_plugins = ["pytester"]

HEADER = '''
from polysteer.models.reference import ReferenceAdapter, reference_prompts
from polysteer.testing import AdapterConformance


class Reference(AdapterConformance):
    generate_kwargs = {"max_new_tokens": 5}
    cfg_kwargs = {"guidance_scale": 2.0}

    def make_adapter(self):
        return self.adapter_class()

    def make_inputs(self):
        return reference_prompts(samples=2, length=6)
'''

BROKEN = HEADER + '''

class ClockStopsAfterPrompt(ReferenceAdapter):
    """Announces the prefill, then never advances the clock during decode steps."""

    def advance_step(self, *, phase, **kwargs):
        if phase == "prefill":
            super().advance_step(phase=phase, **kwargs)


class IgnoresTheCache(ReferenceAdapter):
    """Reports offset 0 and no prompt under a KV cache: position masks then misfire."""

    def advance_step(self, **kwargs):
        super().advance_step(**{**kwargs, "offset": 0, "prompt_length": 0})


class LeaksHook(ReferenceAdapter):
    """Installs its own forward hook on every generation and never removes it."""

    def run_generation(self, inputs, **kwargs):
        self.model.unembed.register_forward_hook(lambda module, args, output: None)
        return super().run_generation(inputs, **kwargs)


class ForgetsRows(ReferenceAdapter):
    """Never says which rows are which sample (the clock then assumes a batch of one)."""

    def advance_step(self, **kwargs):
        kwargs.pop("rows")
        super().advance_step(**kwargs)


class PlainRowsUnderGuidance(ReferenceAdapter):
    """Doubles the batch for classifier-free guidance but reports one plain row per row."""

    def advance_step(self, *, rows, **kwargs):
        super().advance_step(rows=type(rows).plain(rows.rows), **kwargs)


class ProgressStopsShort(ReferenceAdapter):
    """Announces one forward pass more than it runs, so progress never reaches 1.0."""

    def begin_generation(self, total_steps):
        super().begin_generation(None if total_steps is None else total_steps + 1)


class UnknownSiteIsKeyError(ReferenceAdapter):
    """Lets a bare KeyError escape for an unknown site instead of a clear polysteer error."""

    def bind(self, site):
        return {s: super(UnknownSiteIsKeyError, self).bind(s) for s in self.sites()}[site]


class TestClockStopsAfterPrompt(Reference):
    adapter_class = ClockStopsAfterPrompt


class TestLeaksHook(Reference):
    adapter_class = LeaksHook


class TestForgetsRows(Reference):
    adapter_class = ForgetsRows


class TestPlainRowsUnderGuidance(Reference):
    adapter_class = PlainRowsUnderGuidance


class TestIgnoresTheCache(Reference):
    adapter_class = IgnoresTheCache


class TestProgressStopsShort(Reference):
    adapter_class = ProgressStopsShort


class TestUnknownSiteIsKeyError(Reference):
    adapter_class = UnknownSiteIsKeyError
'''

# which checks of the suite must fail for each broken adapter (all the others must pass)
EXPECTED_FAILURES = {
    "TestClockStopsAfterPrompt": {"test_late_steps_are_steered", "test_prefill_decode_accounting",
                                  "test_generated_only_steering_leaves_the_prompt_alone"},
    "TestIgnoresTheCache": {"test_generated_only_steering_leaves_the_prompt_alone"},
    "TestLeaksHook": {"test_hooks_removed_after_success", "test_hooks_removed_after_exception",
                      "test_governor_zero_intensity_is_identity_and_hooks_are_removed"},
    "TestForgetsRows": {"test_capture_shapes_are_batch_positions_channels",
                        "test_rows_match_the_batch", "test_cfg_branch_touches_only_its_rows"},
    "TestPlainRowsUnderGuidance": {"test_cfg_branch_touches_only_its_rows"},
    "TestProgressStopsShort": {"test_step_clock_is_monotonic"},
    "TestUnknownSiteIsKeyError": {"test_unknown_site_is_a_clear_error"},
}
CHECKS_PER_CLASS = sum(name.startswith("test_") for name in dir(AdapterConformance))

CONTROL = HEADER + '''

class TestReferenceAdapter(Reference):
    adapter_class = ReferenceAdapter
'''


def _failed(lines: list[str]) -> set[tuple[str, str]]:
    """``(class, test)`` of every ``FAILED file::Class::test`` line of a ``-rf`` summary."""
    found = (re.match(r"FAILED \S+?::(\w+)::(\w+)", line) for line in lines)
    return {(m[1], m[2]) for m in found if m}


def test_suite_fails_exactly_the_broken_contracts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rf", "-q")
    expected = {(cls, test) for cls, tests in EXPECTED_FAILURES.items() for test in tests}
    assert _failed(result.outlines) == expected, "\n".join(result.outlines)
    result.assert_outcomes(failed=len(expected),
                           passed=CHECKS_PER_CLASS * len(EXPECTED_FAILURES) - len(expected))
    # the failures explain themselves (tracebacks come in class order)
    result.stdout.fnmatch_lines([
        "*the adapter must advance the clock every pass*",
        "*new positions announced by the steps do not add up to what the site saw*",
        "*the last step of a generation must reach progress 1.0*"])


def test_suite_passes_on_the_reference_adapter(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_control=CONTROL)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=CHECKS_PER_CLASS)
