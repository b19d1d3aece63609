"""The server with the real preference store (SQLite): a preference stated in one turn is applied
three turns later and after a restart (a new app on the same file). Recognition is a table here;
tests/text/test_smollm2_preferences.py measures the real recogniser on SmolLM2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polysteer as ps
from polysteer.preferences import PreferenceStore, Recognised


class TableRecogniser:
    def recognise(self, texts: Sequence[str], model: Any) -> list[list[Recognised]]:
        return [[Recognised("brief")] if t == "please answer more briefly" else [] for t in texts]


def brief_style(name: str) -> ps.Style:
    return ps.Style.from_dict({"name": name, "components": [
        {"name": name, "dictionary": "tiny-dirs", "feature": "dir5", "weight": 3.0}]})


def test_a_stated_preference_holds_three_turns_later_and_after_a_restart(make_app, tmp_path):
    from fastapi.testclient import TestClient

    def store() -> PreferenceStore:
        return PreferenceStore(tmp_path / "prefs.sqlite", TableRecogniser(), decay=0,
                               style_loader=brief_style)

    def ask(client, text: str, user: str = "ann") -> dict:
        return client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": text}], "max_tokens": 8, "user": user,
            "return_token_ids": True}).json()

    with TestClient(make_app(preferences=store())) as c:
        plain = ask(c, "the cat sat", user="bob")
        assert plain["preferences_applied"] == []
        ask(c, "please answer more briefly")
        for turn in ("tell me a story", "and then?", "why?"):
            ask(c, turn)
        later = ask(c, "the cat sat")
        assert [p["name"] for p in later["preferences_applied"]] == ["brief"]
        assert later["choices"][0]["token_ids"] != plain["choices"][0]["token_ids"]
    with TestClient(make_app(preferences=store())) as c:  # a restart: a new app, the same file
        again = ask(c, "the cat sat")
        assert [p["name"] for p in again["preferences_applied"]] == ["brief"]
        assert again["choices"][0]["token_ids"] == later["choices"][0]["token_ids"]
        assert ask(c, "the cat sat", user="bob")["preferences_applied"] == []
    assert store().undo("ann") is not None
    assert store().style_for("ann")[1] == []
