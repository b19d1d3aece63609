"""The playground's endpoints on the tiny models (the page itself: test_playground_browser.py)."""

from __future__ import annotations

import base64
import threading

import pytest
import yaml

from polysteer.serve import control_range, static_dir


@pytest.fixture
def play(playground_app):
    from fastapi.testclient import TestClient

    with TestClient(playground_app) as c:
        yield c


def test_the_page_and_its_files_are_served_and_fetch_nothing_from_elsewhere(play):
    page = play.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/playground.js" in page.text
    for name in ("playground.js", "playground.css"):
        r = play.get(f"/static/{name}")
        assert r.status_code == 200, name
    for path in static_dir().iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name


def test_info_lists_the_models_and_the_dictionaries_that_fit(play):
    info = play.get("/v1/playground/info").json()
    assert info["model"] == "tiny-llama"
    assert info["modalities"]["image"] == {"model": "tiny-avatar", "loaded": False}
    names = [d["name"] for d in info["dictionaries"]]
    assert "tiny-dirs" in names and "tiny-text-up" in names
    assert "tiny-image-up" not in names  # made on another model
    assert not any(n.startswith("smollm2") for n in names)  # shipped, but for another model


def test_controls_are_the_styles_that_apply_to_each_model_with_a_range(play):
    text = play.get("/v1/playground/controls?modality=text").json()
    by_name = {c["name"]: c for c in text["data"]}
    assert set(by_name) == {"tiny-cheerful", "tiny-push"}  # shipped styles are for smollm2
    assert by_name["tiny-push"]["range"] == [0.0, 1.0] and by_name["tiny-push"]["calibrated"] is False
    assert control_range() == {"range": [0.0, 1.0], "calibrated": False, "calibration": None}
    image = play.get("/v1/playground/controls?modality=image").json()
    assert image["model"] == "tiny-avatar"
    assert [c["name"] for c in image["data"]] == ["tiny-cheerful"]
    assert play.get("/v1/playground/info").json()["modalities"]["image"]["loaded"] is True
    assert play.get("/v1/playground/controls?modality=smell").status_code == 400


def test_a_feature_card_shows_where_it_fires_and_its_neighbours(play):
    card = play.post("/v1/playground/feature", json={"dictionary": "tiny-dirs", "feature": "dir2",
                                                     "text": "the cat sat"}).json()
    assert card["index"] == 2 and card["label"] == "dir2"
    assert card["evidence"] is None  # no labels.json recorded for it
    assert len(card["in_text"]) >= 3 and all("value" in t for t in card["in_text"])
    assert card["similar"] and all(s["index"] != 2 for s in card["similar"])
    assert card["range"] == [0.0, 1.0]
    missing = play.post("/v1/playground/feature", json={"dictionary": "tiny-dirs", "feature": 99})
    assert missing.status_code == 404 and "0..7" in missing.json()["error"]["message"]


def test_label_evidence_is_read_from_labels_json(play, home):
    from polysteer.features.labels import FeatureReport, TopExample, save_labels

    reports = [FeatureReport(i, f"dir{i}", positions=10, density=0.1) for i in range(8)]
    reports[1].top = [TopExample(0, 2, 1.5)]
    reports[1].details = {"contexts": ["the [cat] sat"], "promoted": ["mat"]}
    save_labels(home / "home" / "dictionaries" / "tiny-dirs", reports)
    card = play.post("/v1/playground/feature", json={"dictionary": "tiny-dirs", "feature": 1}).json()
    assert card["evidence"]["contexts"] == [{"value": 1.5, "text": "the [cat] sat"}]
    assert card["evidence"]["promoted"] == ["mat"]


def test_sliders_compose_into_a_style_that_saves_and_loads_back(play):
    sliders = [{"kind": "style", "name": "tiny-push", "value": 0.5},
               {"kind": "feature", "dictionary": "tiny-dirs", "feature": 3, "value": 0.25},
               {"kind": "style", "name": "tiny-cheerful", "value": 0}]
    composed = play.post("/v1/playground/compose", json={"sliders": sliders, "name": "mine"}).json()
    assert composed["style"]["description"] == "playground: tiny-push=0.5, tiny-dirs#3=0.25"
    weights = {c["name"]: c["weight"] for c in composed["style"]["components"]}
    assert weights == {"push": 1.5, "tiny-dirs-3": 0.25}
    assert yaml.safe_load(composed["yaml"]) == composed["style"]
    saved = play.put("/v1/styles/mine", json={"style": composed["style"]})
    assert saved.status_code == 200, saved.text
    assert play.get("/v1/styles/mine").json()["style"]["description"] == composed["style"]["description"]
    assert play.post("/v1/playground/compose", json={"sliders": [sliders[2]]}).status_code == 400
    too_high = play.post("/v1/playground/compose", json={"sliders": [{**sliders[0], "value": 9}]})
    assert too_high.status_code == 400 and too_high.json()["error"]["code"] == "intensity_too_high"


def test_draw_returns_the_unsteered_and_the_steered_picture(play):
    plain = play.post("/v1/playground/draw", json={"sliders": [], "seed": 1}).json()
    assert plain["unsteered"] == plain["steered"] and plain["unsteered"].startswith("data:image/png;base64,")
    steered = play.post("/v1/playground/draw", json={"seed": 1, "sliders": [
        {"kind": "style", "name": "tiny-cheerful", "value": 1.0}]}).json()
    assert steered["unsteered"] == plain["unsteered"]  # the same seed: the same twin
    assert steered["steered"] != steered["unsteered"]
    assert base64.b64decode(steered["steered"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_speak_returns_two_wavs_and_spectrograms(play):
    out = play.post("/v1/playground/speak", json={"text": "hello there.", "sliders": [
        {"kind": "style", "name": "tiny-cheerful", "value": 1.0}]}).json()
    for key in ("unsteered", "steered"):
        assert out[key]["audio"].startswith("data:audio/wav;base64,")
        assert base64.b64decode(out[key]["audio"].split(",", 1)[1])[:4] == b"RIFF"
        spec = out[key]["spectrogram"]
        assert len(base64.b64decode(spec["data"])) == spec["width"] * spec["height"] > 0
    assert out["steered"]["audio"] != out["unsteered"]["audio"]
    assert play.post("/v1/playground/speak", json={"text": "  "}).status_code == 422


def test_create_makes_story_portrait_and_narration(play):
    out = play.post("/v1/playground/create", json={"prompt": "a cat on a ship", "sliders": [
        {"kind": "style", "name": "tiny-cheerful", "value": 1.0}]})
    assert out.status_code == 200, out.text
    data = out.json()
    assert set(data["parts"]) == {"story", "portrait", "narration"}
    assert data["parts"]["portrait"]["steered"].startswith("data:image/png")
    assert data["parts"]["narration"]["unsteered"].startswith("data:audio/wav")
    assert isinstance(data["story"], str) and data["parts"]["story"]["steered"] == data["story"]


def test_a_second_drawing_while_one_runs_is_a_429_naming_the_busy_worker(play, playground_app):
    media = playground_app.state.playground
    started, release = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait(30)

    import asyncio

    holder = threading.Thread(target=lambda: asyncio.run(media.run(hold, exclusive=True)))
    holder.start()
    try:
        assert started.wait(30)
        busy = play.post("/v1/playground/draw", json={"sliders": []})
        assert busy.status_code == 429
        assert busy.json()["error"]["code"] == "media_busy"
        assert "busy" in busy.json()["error"]["message"]
    finally:
        release.set()
        holder.join(30)
    assert play.post("/v1/playground/draw", json={"sliders": []}).status_code == 200


def test_bad_sliders_are_refused_with_the_field_named(play):
    r = play.post("/v1/playground/draw", json={"sliders": [{"kind": "style", "name": "../x",
                                                            "value": 1}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "sliders[0].name"
    r = play.post("/v1/playground/draw", json={"sliders": [{"kind": "colour", "value": 1}]})
    assert r.status_code == 422
    r = play.post("/v1/playground/draw", json={"sliders": [{"kind": "style", "name": "nope",
                                                            "value": 1}]})
    assert r.status_code == 404


def test_the_playground_can_be_turned_off(make_app):
    from fastapi.testclient import TestClient

    with TestClient(make_app(playground=False)) as c:
        assert c.get("/").status_code == 404
        assert c.get("/v1/playground/info").status_code == 404
        assert c.get("/v1/models").status_code == 200


def test_a_style_calibrated_for_the_served_model_shows_its_calibration(play, tiny):
    """``polysteer calibrate`` stored a range for tiny-push on this model: its slider says so."""
    from polysteer.steering.calibration import Calibration

    Calibration(style="tiny-push", model=tiny.model_fingerprint, modality="text", high=2.0, low=0.5,
                bound=1.5, coherence="perplexity ratio", score="judge P(concept)").save()
    controls = play.get("/v1/playground/controls?modality=text").json()
    push = {c["name"]: c for c in controls["data"]}["tiny-push"]
    assert push["calibrated"] is True and push["range"] == [0.0, 1.0]
    assert push["calibration"]["high"] == 2.0 and push["calibration"]["calibrated_low"] == 0.25
    cheerful = {c["name"]: c for c in controls["data"]}["tiny-cheerful"]
    assert cheerful["calibrated"] is False and cheerful["calibration"] is None


def test_each_style_links_to_its_side_effect_audit(play):
    """One click from a slider: the audit of that style on the served model, as a page."""
    controls = play.get("/v1/playground/controls?modality=text").json()
    push = {c["name"]: c for c in controls["data"]}["tiny-push"]
    assert push["audit"] == "/v1/playground/audit?modality=text&style=tiny-push"
    page = play.get(push["audit"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Side-effect audit" in page.text and "tiny-push" in page.text
    assert play.get("/v1/playground/audit?style=no-such-style").status_code == 404
    assert play.get("/v1/playground/audit?style=tiny-push&intensity=nan").status_code == 400
