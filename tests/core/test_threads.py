"""Steering is scoped to the thread (or asyncio task) that opened it: another thread's generation on
the same model is never steered by it, and neither run's step history is touched by the other."""

from __future__ import annotations

import asyncio
import threading

import torch

import polysteer as ps
from polysteer.models.reference import reference_prompts

ROUNDS = 40


def _pairs():
    model = ps.load_model("reference")  # the shipped demo dictionary was made on it
    style = ps.load_style("reference-demo")
    prompts = reference_prompts(samples=2, length=6)
    plain = model.generate(prompts, max_new_tokens=12).outputs
    with ps.steer(model, style, intensity=2.0):
        steered = model.generate(prompts, max_new_tokens=12).outputs
    assert not torch.equal(plain, steered)  # the style changes this model's output
    return model, style, prompts, plain, steered


def test_a_thread_outside_the_steering_context_is_never_steered():
    model, style, prompts, plain, steered = _pairs()
    got: dict[str, list] = {"plain": [], "steered": [], "steps": []}
    start = threading.Barrier(2)

    def steering_thread():
        start.wait()
        for _ in range(ROUNDS):
            with ps.steer(model, style, intensity=2.0) as run:
                got["steered"].append(model.generate(prompts, max_new_tokens=12).outputs)
            got["steps"].append([s.index for s in run.clock.history])

    def plain_thread():
        start.wait()
        for _ in range(ROUNDS):
            record = model.generate(prompts, max_new_tokens=12)
            got["plain"].append(record.outputs)
            got["steps"].append([s.index for s in record.steps])

    threads = [threading.Thread(target=steering_thread), threading.Thread(target=plain_thread)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got["plain"]) == len(got["steered"]) == ROUNDS
    assert all(torch.equal(out, plain) for out in got["plain"])        # never steered by the other
    assert all(torch.equal(out, steered) for out in got["steered"])    # never un-steered either
    assert all(steps == list(range(12)) for steps in got["steps"])     # one clock step per own pass
    assert model.attached_clocks == ()


def test_an_asyncio_task_outside_the_context_is_not_steered():
    model, style, prompts, plain, steered = _pairs()

    async def steered_task(ready: asyncio.Event, done: asyncio.Event):
        with ps.steer(model, style, intensity=2.0):
            ready.set()
            await done.wait()  # the context stays open while the other task generates
            return model.generate(prompts, max_new_tokens=12).outputs

    async def plain_task(ready: asyncio.Event, done: asyncio.Event):
        await ready.wait()
        out = model.generate(prompts, max_new_tokens=12).outputs
        done.set()
        return out

    async def main():
        ready, done = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(steered_task(ready, done), plain_task(ready, done))

    got_steered, got_plain = asyncio.run(main())
    assert torch.equal(got_plain, plain) and torch.equal(got_steered, steered)
