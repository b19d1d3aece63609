"""The polysteer adapter conformance suite, run on the example adapter (streaming and not)."""

from __future__ import annotations

import torch
from polysteer.steering import steer
from polysteer.testing import AdapterConformance

from polysteer_example import ExampleConvAdapter, TinyWaveNet, WaveNetConfig, example_frames


class TestExampleConvAdapter(AdapterConformance):
    """Every contract, with streaming causal convolutions (the KV-cache analogue)."""

    generate_kwargs = {"max_new_frames": 5}
    cfg_kwargs = {"guidance_scale": 2.0}

    def make_adapter(self) -> ExampleConvAdapter:
        return ExampleConvAdapter(TinyWaveNet(WaveNetConfig(n_blocks=3)))

    def make_inputs(self) -> torch.Tensor:
        return example_frames(samples=2, length=6)


class TestExampleConvAdapterWithoutCache(TestExampleConvAdapter):
    """Without streaming every pass sees all frames so far, but only the last one is new."""

    generate_kwargs = {"max_new_frames": 5, "use_cache": False}

    def test_prefill_decode_accounting(self) -> None:
        with steer(self.adapter, None, capture=[self.site]) as run:
            self._generate()
        assert [s.new for s in run.clock.history] == [6, 1, 1, 1, 1]
        assert [s.offset for s in run.clock.history] == [0] * 5
        assert run.captured(self.site).shape[1] == 10


class TestExampleConvAdapterOneBlock(TestExampleConvAdapter):
    """The smallest model: the default steering site is then the block's skip output."""

    def make_adapter(self) -> ExampleConvAdapter:
        return ExampleConvAdapter(TinyWaveNet(WaveNetConfig(n_blocks=1, channels=8, seed=3)))
