"""A real uvicorn on a free loopback port, used by the official ``openai`` client unchanged
(steering through ``extra_body``), streaming included; disconnects and graceful shutdown."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")


@contextlib.contextmanager
def live(app: Any, grace: int = 5) -> Iterator[tuple[str, Any]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                           timeout_graceful_shutdown=grace))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def slow_steps(model: Any, seconds: float) -> Iterator[list[int]]:
    """Make every forward pass of ``model`` take ``seconds`` longer; count them."""
    calls = [0]

    def hook(*_):
        calls[0] += 1
        time.sleep(seconds)

    handle = model.model.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def test_the_openai_client_works_unchanged(make_app, feature_steering):
    from polysteer.serve import BackgroundServer

    app = make_app(api_key="test-key")
    with BackgroundServer(app) as server:
        url = server.url
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="test-key", max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny-llama"]
        messages = [{"role": "user", "content": "the cat sat on the mat"}]
        plain = client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=10)
        steered = client.chat.completions.create(
            model="tiny-llama", messages=messages, max_tokens=10,
            extra_body={"steering": feature_steering(0, 3.0)})
        assert plain.choices[0].message.content != steered.choices[0].message.content
        assert steered.model_extra["steering"] == [{"name": "features", "intensity": 1.0}]

        # steered and unsteered streams side by side
        got: dict[str, str] = {}

        def stream(name: str, extra: dict) -> None:
            chunks = client.chat.completions.create(model="tiny-llama", messages=messages,
                                                    max_tokens=10, stream=True, extra_body=extra)
            got[name] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        threads = [threading.Thread(target=stream, args=("plain", {})),
                   threading.Thread(target=stream, args=("steered",
                                                         {"steering": feature_steering(0, 3.0)}))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert got == {"plain": plain.choices[0].message.content,
                       "steered": steered.choices[0].message.content}

        text = client.completions.create(model="tiny-llama", prompt="hello friend", max_tokens=6)
        streamed = client.completions.create(model="tiny-llama", prompt="hello friend",
                                             max_tokens=6, stream=True)
        assert "".join(c.choices[0].text for c in streamed) == text.choices[0].text

        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="tiny-llama", messages=messages, extra_body={
                "steering": {"style": "pirate", "intensity": 100}})
        assert bad.value.code == "intensity_too_high"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="tiny-llama", messages=messages,
                                           extra_body={"steering": "no-such-style"})
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()


def test_a_client_that_disconnects_mid_stream_frees_its_slot(make_app, tiny):
    app = make_app()
    engine = app.state.engine
    with live(app) as (url, _), slow_steps(tiny, 0.1) as calls:
        with httpx.Client(timeout=30) as c, c.stream(
                "POST", f"{url}/v1/completions",
                json={"prompt": "the cat", "max_tokens": 32, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                    break  # the first real text: now hang up
        deadline = time.monotonic() + 20
        while engine.load:
            assert time.monotonic() < deadline, "the slot was never freed"
            time.sleep(0.05)
        time.sleep(0.3)
        assert calls[0] < 20  # generation stopped long before its 32 tokens
        # the server goes on serving
        ok = httpx.post(f"{url}/v1/completions", json={"prompt": "cat", "max_tokens": 2}, timeout=30)
        assert ok.status_code == 200


def test_graceful_shutdown_lets_a_stream_finish(make_app, tiny):
    app = make_app()
    engine = app.state.engine
    lines: list[str] = []
    with slow_steps(tiny, 0.05):
        with live(app, grace=20) as (url, server):
            def read() -> None:
                with httpx.Client(timeout=60) as c, c.stream(
                        "POST", f"{url}/v1/completions",
                        json={"prompt": "the cat", "max_tokens": 16, "stream": True}) as r:
                    lines.extend(r.iter_lines())

            reader = threading.Thread(target=read)
            reader.start()
            while not engine.load:
                time.sleep(0.01)
            server.should_exit = True  # as on Ctrl-C
            reader.join(60)
    events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"
    assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    assert not engine._thread.is_alive()  # the lifespan stopped the engine
