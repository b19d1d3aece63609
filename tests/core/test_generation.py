"""Generation records: what generate() returns, what measures read, and no ``last*`` adapter state."""

import ast
from pathlib import Path

import pytest
import torch

import polysteer as ps
from polysteer.builtins import changed_fraction, mean_abs_difference
from polysteer.models.reference import ReferenceAdapter, reference_prompts
from polysteer.steering.generation import Generation, as_generation, token_lengths
from polysteer.steering.style import Style
from polysteer.workflows.demo import build_demo_dictionary, high_token_fraction

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def adapter():
    return ReferenceAdapter()


def test_reference_generation_is_a_self_describing_record(adapter):
    prompts = reference_prompts(samples=3, length=5)
    out = adapter.generate(prompts, max_new_tokens=4)
    assert isinstance(out, ps.Generation)
    out.check()
    assert (out.modality, out.model, out.prompt_length, len(out)) == ("text", "reference", 5, 3)
    assert torch.equal(out.outputs[:, :5], prompts) and out.generated.shape == (3, 4)
    assert out.extras["vocab_size"] == 64
    assert [(s.index, s.phase, s.new) for s in out.steps] == \
        [(0, "prefill", 5), (1, "decode", 1), (2, "decode", 1), (3, "decode", 1)]
    assert out.steps[-1].progress == 1.0


def test_a_baseline_record_keeps_its_prompt_length_after_a_longer_prompt(adapter):
    """The bug records fix: a measure on the baseline read the steered run's prompt length."""
    style = Style.from_dict({"name": "high", "components": [{"dictionary": "x", "feature": "high tokens"}]})
    style.components[0].dictionary = build_demo_dictionary(adapter)
    baseline = adapter.generate(reference_prompts(length=4), max_new_tokens=6)
    fraction = high_token_fraction(baseline, None)
    steered = adapter.generate(reference_prompts(length=9), style=style, intensity=2.0, max_new_tokens=6)
    assert baseline.prompt_length == 4 and steered.prompt_length == 9
    assert high_token_fraction(baseline, None) == fraction
    assert high_token_fraction(steered, baseline) > fraction


def test_unsteered_and_steered_generations_record_the_same_steps(adapter):
    prompts = reference_prompts()
    plain = adapter.generate(prompts, max_new_tokens=3)
    with ps.steer(adapter, None) as run:
        watched = adapter.generate(prompts, max_new_tokens=3)
    assert [(s.index, s.phase, s.offset, s.new) for s in plain.steps] == \
        [(s.index, s.phase, s.offset, s.new) for s in run.clock.history] == \
        [(s.index, s.phase, s.offset, s.new) for s in watched.steps]
    assert adapter.attached_clocks == ()


def test_builtin_measures_compare_records():
    a = Generation(torch.tensor([[1, 2, 3, 4]]), "text")
    b = Generation(torch.tensor([[1, 2, 0, 0]]), "text")
    assert changed_fraction(a, b) == 0.5 and changed_fraction(a, a) == 0.0
    assert mean_abs_difference(a, b) == pytest.approx(1.75)
    with pytest.raises(ValueError, match="baseline"):
        changed_fraction(a, None)


def test_rows_cut_each_sample_to_its_length_and_seconds_use_the_sample_rate():
    wave = torch.tensor([[0.1, 0.2, 0.3, 0.0], [0.5, 0.0, 0.0, 0.0]])
    out = Generation(wave, "voice", lengths=torch.tensor([3, 1]), sample_rate=2)
    assert [r.tolist() for r in out.rows()] == [pytest.approx([0.1, 0.2, 0.3]), [0.5]]
    assert out.seconds.tolist() == [1.5, 0.5]
    with pytest.raises(ValueError, match="sample_rate"):
        _ = Generation(wave, "image").seconds


@pytest.mark.parametrize(("change", "field"), [
    ({"lengths": torch.tensor([5, 1])}, "lengths"),
    ({"lengths": torch.tensor([1])}, "lengths"),
    ({"texts": ["only one"]}, "texts"),
    ({"prompt_length": 9}, "prompt_length"),
    ({"frames": torch.tensor([1, 2, 3])}, "frames"),
    ({"sample_rate": 0}, "sample_rate"),
])
def test_check_names_the_inconsistent_field(change, field):
    Generation(torch.zeros(2, 4), "voice", lengths=torch.tensor([4, 2]), texts=["a", "b"]).check()
    with pytest.raises(ValueError, match=f"Generation.{field}"):
        Generation(torch.zeros(2, 4), "voice", **change).check()


def test_token_lengths_stop_at_the_first_end_of_sequence_after_the_prompt():
    ids = torch.tensor([[7, 2, 5, 2, 0], [7, 7, 5, 5, 5]])
    assert token_lengths(ids, 2, eos=2).tolist() == [4, 5]  # the prompt's own 2 does not count
    assert token_lengths(ids, 2, eos=[5, 9]).tolist() == [3, 3]
    assert token_lengths(ids, 2, eos=None).tolist() == [5, 5]


def test_a_bare_tensor_from_an_old_adapter_is_wrapped(adapter):
    class Bare(ReferenceAdapter):
        def run_generation(self, inputs, **kwargs):
            return super().run_generation(inputs, **kwargs).outputs

    out = Bare().generate(reference_prompts(), max_new_tokens=2)
    assert isinstance(out, Generation) and out.modality == "text" and len(out.steps) == 2
    assert as_generation(out) is out


def _last_state(source: str) -> list[int]:
    """Lines that store generation state: ``self.last... =`` anywhere, or a class attribute
    ``last... =`` (a default that instances overwrite)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and node.value.id == "self" \
                and node.attr.startswith("last"):
            lines.append(node.lineno)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                targets = item.targets if isinstance(item, ast.Assign) else \
                    [item.target] if isinstance(item, ast.AnnAssign) else []
                lines += [t.lineno for t in targets if isinstance(t, ast.Name) and t.id.startswith("last")]
    return sorted(lines)


def test_no_adapter_keeps_last_state():
    """Everything about a generation belongs in its record: no ``self.last...`` in the library
    (core and the built-in plugins) or the example plugin."""
    offenders = []
    for folder in ("core", "plugins", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            source = path.read_text()
            offenders += [f"{path.relative_to(ROOT)}:{n}: {source.splitlines()[n - 1].strip()}"
                          for n in _last_state(source)]
    assert not offenders, "adapters keep generation state; put it in the Generation record:\n" + \
        "\n".join(offenders)


def test_the_last_state_check_catches_what_it_must():
    source = """
class A:
    last_prompt_length = 0
    first = 1

    def run(self):
        self.last = 1
        self.last_ids: list | None = None
        if self.last_texts == []:
            last = 2
        self.lasting.x = 3
        return last
"""
    assert _last_state(source) == [3, 7, 8]
