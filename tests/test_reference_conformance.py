"""The conformance suite on the built-in reference adapter (with and without a KV cache)."""

from polysteer.models.reference import ReferenceAdapter, reference_prompts
from polysteer.testing import AdapterConformance


class TestReferenceAdapter(AdapterConformance):
    generate_kwargs = {"max_new_tokens": 5}
    cfg_kwargs = {"guidance_scale": 2.0}

    def make_adapter(self):
        return ReferenceAdapter()

    def make_inputs(self):
        return reference_prompts(samples=2, length=6)


class TestReferenceAdapterWithoutCache(TestReferenceAdapter):
    generate_kwargs = {"max_new_tokens": 5, "use_cache": False}

    def test_prefill_decode_accounting(self):
        """Without a cache every pass sees the whole sequence; only the last position is new."""
        from polysteer.steering.runtime import steer

        with steer(self.adapter, None, capture=[self.site]) as run:
            self._generate()
        assert [s.new for s in run.clock.history] == [6, 1, 1, 1, 1]
        assert run.captured(self.site).shape[1] == 10
