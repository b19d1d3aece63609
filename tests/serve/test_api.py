"""The OpenAI-shaped API on the tiny model: completions, streams, steering, styles, read-outs."""

from __future__ import annotations

import json

CHAT = [{"role": "user", "content": "the cat sat on the mat"}]


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": "tiny-llama", "messages": CHAT,
                                                     "max_tokens": 10, **body})


def sse(text: str) -> list:
    lines = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_models_lists_the_served_model(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["tiny-llama"]
    assert client.get("/v1/models/tiny-llama").json()["id"] == "tiny-llama"
    assert client.get("/v1/models/gpt-4").status_code == 404


def test_chat_completion_is_the_models_greedy_answer(client, tiny):
    r = chat(client, return_token_ids=True, unknown_field={"ignored": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    ids = tiny.encode("the cat sat on the mat", chat=False)
    direct = tiny.generate(ids, max_new_tokens=10).generated[0].tolist()
    assert choice["token_ids"] == [t for t in direct if t != 3][: len(choice["token_ids"])]
    assert choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["prompt_tokens"] == ids["input_ids"].shape[1]
    assert body["usage"]["completion_tokens"] == len(choice["token_ids"])


def test_a_stream_adds_up_to_the_plain_answer(client):
    plain = chat(client).json()["choices"][0]
    r = chat(client, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = sse(r.text)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["finish_reason"]
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_text_completions_plain_list_and_stream(client):
    one = client.post("/v1/completions", json={"prompt": "hello friend", "max_tokens": 6}).json()
    assert one["object"] == "text_completion"
    two = client.post("/v1/completions", json={"prompt": ["hello friend", "red ship"],
                                               "max_tokens": 6}).json()
    assert [c["index"] for c in two["choices"]] == [0, 1]
    assert two["choices"][0]["text"] == one["choices"][0]["text"]
    streamed = client.post("/v1/completions", json={"prompt": "hello friend", "max_tokens": 6,
                                                    "stream": True})
    assert "".join(c["choices"][0]["text"] for c in sse(streamed.text)) == one["choices"][0]["text"]


def test_stop_strings_cut_the_answer(client):
    full = chat(client, max_tokens=12).json()["choices"][0]["message"]["content"]
    words = full.split()
    assert len(words) >= 3
    stop = words[2]
    cut = chat(client, max_tokens=12, stop=[stop]).json()["choices"][0]
    assert cut["message"]["content"] == full[: full.index(stop)]
    assert cut["finish_reason"] == "stop"


def test_steering_by_features_inline_and_name(client, feature_steering):
    plain = chat(client, return_token_ids=True).json()
    steered = chat(client, return_token_ids=True, steering=feature_steering(0)).json()
    assert steered["choices"][0]["token_ids"] != plain["choices"][0]["token_ids"]
    assert steered["steering"] == [{"name": "features", "intensity": 1.0}]
    zero = chat(client, return_token_ids=True, steering={**feature_steering(0), "intensity": 0.0})
    assert zero.json()["choices"][0]["token_ids"] == plain["choices"][0]["token_ids"]
    inline = {"name": "push0", "components": [{"name": "p", "dictionary": "tiny-dirs",
                                               "feature": "dir0", "weight": 3.0}]}
    by_inline = chat(client, return_token_ids=True, steering={"style": inline}).json()
    assert by_inline["choices"][0]["token_ids"] == steered["choices"][0]["token_ids"]
    assert client.put("/v1/styles/push0", json={"style": inline}).status_code == 200
    by_name = chat(client, return_token_ids=True, steering="push0").json()
    assert by_name["choices"][0]["token_ids"] == steered["choices"][0]["token_ids"]
    # a list of parts adds up: +0 and the push itself
    mixed = chat(client, return_token_ids=True,
                 steering=[{"style": "push0", "intensity": 0.0}, feature_steering(0)]).json()
    assert mixed["choices"][0]["token_ids"] == steered["choices"][0]["token_ids"]


def test_styles_are_saved_listed_read_and_deleted(client, home):
    inline = {"components": [{"name": "p", "dictionary": "tiny-dirs", "feature": 2, "weight": 1.5}]}
    r = client.put("/v1/styles/my-style", json=inline)
    assert r.status_code == 200, r.text
    saved = home / "styles" / "my-style.yaml"
    assert saved.is_file()
    assert not [p for p in saved.parent.iterdir() if p.name.endswith(".tmp")]
    listed = {s["name"]: s["source"] for s in client.get("/v1/styles").json()["data"]}
    assert listed["my-style"] == "saved" and listed["pirate"] == "shipped"
    got = client.get("/v1/styles/my-style").json()
    assert got["style"]["components"][0]["weight"] == 1.5
    assert client.delete("/v1/styles/my-style").json() == {"name": "my-style", "deleted": True}
    assert not saved.exists()
    assert client.get("/v1/styles/my-style").status_code == 404
    assert client.delete("/v1/styles/my-style").status_code == 404
    assert client.delete("/v1/styles/pirate").status_code == 400
    assert client.put("/v1/styles/..evil", json=inline).status_code in (400, 404)
    bad = client.put("/v1/styles/broken", json={"components": [
        {"name": "p", "dictionary": "tiny-dirs", "feature": "no-such-feature"}]})
    assert bad.status_code == 400 and "no-such-feature" in bad.json()["error"]["message"]
    assert not (home / "styles" / "broken.yaml").exists()


def test_inspect_reads_features_per_token(client, tiny):
    r = client.post("/v1/inspect", json={"text": "the cat sat", "dictionary": "tiny-dirs", "top": 2})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert [t["token"] for t in tokens] == ["the", "cat", "sat"]
    assert all(len(t["features"]) == 2 for t in tokens)
    values = [abs(f["value"]) for f in tokens[1]["features"]]
    assert values == sorted(values, reverse=True) and values[0] > 0


def test_feature_search_by_label_direction_and_contrast(client):
    r = client.post("/v1/features/search", json={"dictionary": "tiny-dirs", "query": "dir3",
                                                  "top": 3})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["label"] == "dir3"
    similar = client.post("/v1/features/search", json={"dictionary": "tiny-dirs",
                                                       "similar_to": "dir1", "top": 7}).json()
    assert "dir1" not in [m["label"] for m in similar["data"]]
    contrast = client.post("/v1/features/search", json={
        "dictionary": "tiny-dirs", "positive": ["happy cat", "good dog"],
        "negative": ["sad ship", "bad night"], "top": 8})
    assert contrast.status_code == 200, contrast.text
    assert all(m["score"] > 0 for m in contrast.json()["data"])


class FakePreferences:
    """A preference source that remembers 'briefly' as a push on dir5, as a real one would."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []
        self.prefs: dict[str, list] = {}

    def observe(self, user, text, model):
        import types

        self.seen.append((user, text))
        if "briefly" in text:
            self.prefs.setdefault(user, []).append(types.SimpleNamespace(name="brief", weight=3.0))
        return self.prefs.get(user, [])

    def style_for(self, user):
        import polysteer as ps

        prefs = self.prefs.get(user, [])
        if not prefs:
            return None, []
        style = ps.Style.from_dict({"name": "prefs", "components": [
            {"name": "brief", "dictionary": "tiny-dirs", "feature": "dir5", "weight": 3.0}]})
        return style, prefs


def test_preferences_are_observed_and_applied(make_app):
    from fastapi.testclient import TestClient

    prefs = FakePreferences()
    with TestClient(make_app(preferences=prefs)) as c:
        def ask(text, user="ann", **extra):
            return c.post("/v1/chat/completions", json={
                "messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": text}],
                "max_tokens": 10, "user": user, "return_token_ids": True, **extra}).json()

        before = ask("the cat sat")
        assert before["preferences_applied"] == []
        ask("please answer briefly")
        after = ask("the cat sat")
        assert after["preferences_applied"] == [{"name": "brief", "weight": 3.0}]
        assert after["choices"][0]["token_ids"] != before["choices"][0]["token_ids"]
        alone = ask("the cat sat", steering={"features": [
            {"dictionary": "tiny-dirs", "feature": "dir5", "weight": 3.0}]}, user="bob")
        assert alone["preferences_applied"] == []
        assert alone["choices"][0]["token_ids"] == after["choices"][0]["token_ids"]
        streamed = c.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "the cat sat"}], "max_tokens": 4,
            "user": "ann", "stream": True})
        assert sse(streamed.text)[-1]["preferences_applied"] == [{"name": "brief", "weight": 3.0}]
        no_user = c.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 4}).json()
        assert "preferences_applied" not in no_user
    assert [u for u, _ in prefs.seen] == ["ann", "ann", "ann", "bob", "ann"]
    assert prefs.seen[1] == ("ann", "please answer briefly")


def test_the_serve_command_finds_a_preference_store_only_when_asked_and_importable(monkeypatch):
    import argparse
    import importlib.util

    from polysteer.cli import main
    from polysteer.cli.serve import preference_source

    assert preference_source(argparse.Namespace(no_preferences=True, preferences="x.db")) is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "polysteer.preferences" else real(name, *a))
    assert preference_source(argparse.Namespace(no_preferences=False, preferences="x.db")) is None
    assert main(["serve", "--model", "reference", "--max-queue", "0"]) == 2
