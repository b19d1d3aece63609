"""Bad input and limits: OpenAI-shaped errors with the right 4xx status, never a 500 or a hang."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from polysteer.serve import ServeLimits

MSG = [{"role": "user", "content": "the cat"}]


def assert_error(r, status, code=None, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return err


CASES = [
    ("malformed json", b"{not json", 400, "invalid_json"),
    ("not an object", b"[1, 2]", 400, "invalid_json"),
    ("no messages", {"model": "tiny-llama"}, 422, "invalid_type"),
    ("messages of the wrong type", {"messages": "hello"}, 422, "invalid_type"),
    ("a message without a role", {"messages": [{"content": "x"}]}, 422, "invalid_type"),
    ("max_tokens a string", {"messages": MSG, "max_tokens": "ten"}, 422, "invalid_type"),
    ("max_tokens over the limit", {"messages": MSG, "max_tokens": 33}, 400,
     "max_tokens_out_of_range"),
    ("max_tokens zero", {"messages": MSG, "max_tokens": 0}, 400, "max_tokens_out_of_range"),
    ("intensity over the limit", {"messages": MSG, "steering": {"style": "pirate",
                                                                 "intensity": 9}}, 400,
     "intensity_too_high"),
    ("weight x intensity over the limit", {"messages": MSG, "steering": {"features": [
        {"dictionary": "tiny-dirs", "feature": 0, "weight": 5}]}}, 400, "intensity_too_high"),
    ("intensity not a number", {"messages": MSG, "steering": {"style": "pirate",
                                                               "intensity": "high"}}, 422,
     "invalid_type"),
    ("intensity NaN-like", {"messages": MSG, "steering": {"style": "pirate", "intensity": True}},
     422, "invalid_type"),
    ("unknown style", {"messages": MSG, "steering": "no-such-style"}, 404, "style_not_found"),
    ("style name with a path", {"messages": MSG, "steering": "../etc/passwd"}, 400, "invalid_name"),
    ("unknown dictionary", {"messages": MSG, "steering": {"features": [
        {"dictionary": "no-such-dict", "feature": 0}]}}, 404, "dictionary_not_found"),
    ("dictionary by path", {"messages": MSG, "steering": {"features": [
        {"dictionary": "/etc", "feature": 0}]}}, 400, "invalid_name"),
    ("inline style with a path", {"messages": MSG, "steering": {"style": {"components": [
        {"name": "x", "dictionary": "../../x", "feature": 0}]}}}, 400, "invalid_name"),
    ("unknown feature", {"messages": MSG, "steering": {"features": [
        {"dictionary": "tiny-dirs", "feature": "dir99"}]}}, 400, "invalid_steering"),
    ("feature index out of range", {"messages": MSG, "steering": {"features": [
        {"dictionary": "tiny-dirs", "feature": 99}]}}, 400, "invalid_steering"),
    ("steering of the wrong type", {"messages": MSG, "steering": 3}, 422, "invalid_type"),
    ("steering with unknown keys", {"messages": MSG, "steering": {"stlye": "pirate"}}, 400, None),
    ("a style for another model", {"messages": MSG, "steering": "pirate"}, 400,
     "invalid_steering"),
    ("unknown model", {"model": "gpt-4", "messages": MSG}, 404, "model_not_found"),
    ("n > 1", {"messages": MSG, "n": 2}, 400, None),
    ("temperature out of range", {"messages": MSG, "temperature": 5}, 400, None),
    ("too many stop strings", {"messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, 400, None),
    ("prompt too long", {"messages": [{"role": "user", "content": "cat " * 70}]}, 400,
     "context_length_exceeded"),
]


@pytest.mark.parametrize(("what", "body", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_chat_requests(make_app, what, body, status, code):
    from fastapi.testclient import TestClient

    with TestClient(make_app(limits=ServeLimits(max_tokens=32, max_prompt_tokens=64,
                                                max_intensity=4.0))) as c:
        if isinstance(body, bytes):
            r = c.post("/v1/chat/completions", content=body,
                       headers={"content-type": "application/json"})
        else:
            r = c.post("/v1/chat/completions", json=body)
        assert_error(r, status, code)
        # the server still answers afterwards
        assert c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 2}).status_code == 200


def test_bad_stream_requests_fail_before_the_stream(client):
    r = client.post("/v1/chat/completions", json={"messages": MSG, "stream": True,
                                                  "steering": {"features": [
                                                      {"dictionary": "tiny-dirs", "feature": 99}]}})
    assert_error(r, 400, "invalid_steering")


def test_api_key(make_app):
    from fastapi.testclient import TestClient

    with TestClient(make_app(api_key="s3cret")) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            assert_error(c.get("/v1/models", headers=headers), 401, "invalid_api_key")
            assert_error(c.post("/v1/chat/completions", json={"messages": MSG}, headers=headers),
                         401, "invalid_api_key")
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get("/v1/models", headers=ok).status_code == 200
        assert c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 2},
                      headers=ok).status_code == 200


def test_body_size(make_app):
    from fastapi.testclient import TestClient

    with TestClient(make_app(limits=ServeLimits(max_body_bytes=200))) as c:
        big = {"messages": [{"role": "user", "content": "cat " * 100}]}
        assert_error(c.post("/v1/chat/completions", json=big), 413, "request_too_large")

        def chunks():
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"cat " * 10
            yield b'"}]}'

        # no Content-Length: counted while reading
        assert_error(c.post("/v1/chat/completions", content=chunks()), 413, "request_too_large")


def test_unknown_routes_and_methods(client):
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/chat/completions"), 405)
    assert_error(client.post("/v1/inspect", json={"text": "cat", "dictionary": "nope"}), 404,
                 "dictionary_not_found")
    assert_error(client.post("/v1/inspect", json={"dictionary": "tiny-dirs"}), 422)
    assert_error(client.post("/v1/features/search", json={"dictionary": "tiny-dirs"}), 400)
    assert_error(client.post("/v1/features/search", json={"dictionary": "tiny-dirs",
                                                          "similar_to": "nope"}), 400)
    assert_error(client.put("/v1/styles/x", json={"components": "no"}), 400, "invalid_style")


def test_a_full_queue_answers_429_and_frees_up(make_app):
    app = make_app(limits=ServeLimits(max_queue=2, max_batch=1, max_tokens=8))
    engine = app.state.engine
    gate = threading.Event()
    engine.call(gate.wait)  # hold the worker so requests queue up

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            def ask():
                return c.post("/v1/completions", json={"prompt": "cat", "max_tokens": 4})

            first = [asyncio.create_task(ask()) for _ in range(2)]
            while engine.load < 2:
                await asyncio.sleep(0.01)
            third = await ask()
            gate.set()
            done = await asyncio.gather(*first)
            after = await ask()
            return third, done, after

    third, done, after = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert_error(third, 429, "queue_full")
    assert [r.status_code for r in done] == [200, 200]
    assert after.status_code == 200


def test_closing_the_engine_fails_waiting_requests_with_503(make_app):
    app = make_app()
    engine = app.state.engine
    gate = threading.Event()
    engine.call(gate.wait)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            waiting = asyncio.create_task(c.post("/v1/completions", json={"prompt": "cat"}))
            while engine.load < 1:
                await asyncio.sleep(0.01)
            closer = asyncio.get_running_loop().run_in_executor(None, engine.close)
            await asyncio.sleep(0.05)
            gate.set()
            await closer
            late = await c.post("/v1/completions", json={"prompt": "cat"})
            return await waiting, late

    waiting, late = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert_error(waiting, 503, "shutting_down")
    assert_error(late, 503, "shutting_down")
