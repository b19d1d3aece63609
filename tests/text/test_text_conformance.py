"""The conformance suite and the KV-cache contract on tiny random Llama and GPT-2 models."""

import pytest
import torch

import polysteer as ps
from polysteer.plugins.text.adapter import TransformersAdapter
from polysteer.plugins.text.testing import tiny_model, tiny_text_adapter, tiny_tokenizer
from polysteer.testing import AdapterConformance, probe_style

pytest.importorskip("transformers")

PROMPTS = ["the cat sat on the mat", "hello friend"]


class TestTinyLlama(AdapterConformance):
    generate_kwargs = {"max_new_tokens": 5, "chat": False}
    family = "llama"

    def make_adapter(self):
        return TransformersAdapter(tiny_model(self.family), tiny_tokenizer(), f"tiny-{self.family}")

    def make_inputs(self):
        return PROMPTS


class TestTinyGPT2(TestTinyLlama):
    family = "gpt2"


class TestTinyGPTNeoX(TestTinyLlama):
    family = "gpt_neox"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cached_and_uncached_steering_agree(family, plugin_manager):
    """Steering under a KV cache equals steering with the whole sequence recomputed each step."""
    adapter = tiny_text_adapter(family)
    style = probe_style(adapter, "blocks.1.resid_pre", PROMPTS)
    outs = []
    for use_cache in (True, False):
        with ps.steer(adapter, style, intensity=2.0) as run:
            outs.append(adapter.generate(PROMPTS, max_new_tokens=6, chat=False, use_cache=use_cache).outputs)
        assert [s.phase for s in run.clock.history] == ["prefill"] + ["decode"] * 5
    plain = adapter.generate(PROMPTS, max_new_tokens=6, chat=False).outputs
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], plain)


def test_decode_steps_see_one_new_token_at_the_right_offset(plugin_manager):
    adapter = tiny_text_adapter("llama")
    with ps.steer(adapter, None, capture=["blocks.0.resid_post"]) as run:
        out = adapter.generate(PROMPTS, max_new_tokens=4, chat=False)
    prompt = out.prompt_length
    assert [(s.offset, s.new) for s in run.clock.history] == [(0, prompt), (prompt, 1),
                                                              (prompt + 1, 1), (prompt + 2, 1)]
    assert [(s.offset, s.new) for s in out.steps] == [(s.offset, s.new) for s in run.clock.history]
    assert run.captured("blocks.0.resid_post").shape == (2, out.outputs.shape[1] - 1, 32)


def test_generated_only_mask_leaves_the_prompt_alone(plugin_manager):
    adapter = tiny_text_adapter("llama")
    site = "blocks.0.resid_post"
    style = probe_style(adapter, site, PROMPTS, positions="generated")
    with ps.steer(adapter, None, capture=[site]) as plain:
        adapter.generate(PROMPTS, max_new_tokens=3, chat=False)
    with ps.steer(adapter, style, intensity=2.0, capture=[site]) as run:
        prompt = adapter.generate(PROMPTS, max_new_tokens=3, chat=False).prompt_length
    a, b = plain.captured(site), run.captured(site)
    assert torch.equal(a[:, :prompt], b[:, :prompt])
    assert not torch.allclose(a[:, prompt:], b[:, prompt:])


def test_per_row_styles(plugin_manager):
    """Each batch row can carry its own style: (style, per-sample intensities) pairs."""
    adapter = tiny_text_adapter("llama")
    a = probe_style(adapter, "blocks.1.resid_pre", PROMPTS, seed=1)
    plain = adapter.generate(PROMPTS, max_new_tokens=5, chat=False).outputs
    with ps.steer(adapter, [(a, [0.0, 3.0])]):
        out = adapter.generate(PROMPTS, max_new_tokens=5, chat=False).outputs
    assert torch.equal(out[0], plain[0]) and not torch.equal(out[1], plain[1])


def test_texts_decode_only_the_new_tokens(plugin_manager):
    adapter = tiny_text_adapter("llama")
    out = adapter.generate(["the cat"], max_new_tokens=3, chat=False)
    text = adapter.texts(out)[0]
    assert len(text.split()) <= 3 and not text.startswith("the cat")
    assert out.texts == [text] and out.generated.shape == (1, 3) and out.extras["padding"].tolist() == [0]
    with pytest.raises(TypeError, match="Generation"):
        adapter.texts(out.outputs)


def test_records_of_a_left_padded_batch(plugin_manager):
    adapter = tiny_text_adapter("llama")
    out = adapter.generate(["the cat sat on the mat", "a dog"], max_new_tokens=3, chat=False)
    out.check()
    pads = out.extras["padding"].tolist()
    assert pads[0] == 0 and pads[1] > 0  # the short prompt is left-padded up to the long one
    assert out.prompt_length == adapter.encode(["the cat sat on the mat"], chat=False)["input_ids"].shape[1]
    assert len(out.texts) == 2 and (out.lengths >= out.prompt_length).all()


def test_a_thread_outside_the_steering_context_is_not_steered(plugin_manager):
    """transformers' generate runs the adapter's clock hook on the shared model: it must act only for
    its own thread's generation (the server runs requests in threads)."""
    import threading

    from polysteer.plugin import use_plugin_manager

    adapter = tiny_text_adapter("llama")
    style = probe_style(adapter, "blocks.1.resid_pre", PROMPTS, seed=1)
    plain = adapter.generate(PROMPTS, max_new_tokens=6, chat=False)
    with ps.steer(adapter, style, intensity=3.0):
        steered = adapter.generate(PROMPTS, max_new_tokens=6, chat=False).outputs
    assert not torch.equal(plain.outputs, steered)
    got: dict[str, list] = {"plain": [], "steered": []}

    def run(steering: bool) -> None:
        with use_plugin_manager(plugin_manager):
            for _ in range(15):
                if steering:
                    with ps.steer(adapter, style, intensity=3.0):
                        got["steered"].append(adapter.generate(PROMPTS, max_new_tokens=6, chat=False))
                else:
                    got["plain"].append(adapter.generate(PROMPTS, max_new_tokens=6, chat=False))

    threads = [threading.Thread(target=run, args=(s,)) for s in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(r.outputs, plain.outputs) for r in got["plain"])
    assert all(torch.equal(r.outputs, steered) for r in got["steered"])
    assert all([s.index for s in r.steps] == [s.index for s in plain.steps] for r in got["plain"])
