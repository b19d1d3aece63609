"""Fixtures for the server tests: the tiny random text model, a direction set on it saved under a
temporary polysteer home (found by name), and apps over them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import polysteer as ps  # noqa: E402
from polysteer.serve import ServeLimits, create_app  # noqa: E402

SITE = "blocks.1.resid_post"
FEATURES = 8


@pytest.fixture(scope="session")
def tiny() -> Any:
    from polysteer.plugins.text.testing import tiny_text_adapter

    return tiny_text_adapter()


@pytest.fixture
def home(tmp_path, monkeypatch, tiny) -> Any:
    """A polysteer home holding ``tiny-dirs``: 8 random unit directions at blocks.1.resid_post."""
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    gen = torch.Generator().manual_seed(1)
    vectors = [v / v.norm() for v in torch.randn(FEATURES, 32, generator=gen)]
    dirs = ps.direction_set(vectors, [f"dir{i}" for i in range(FEATURES)], site=SITE,
                            site_norm=2.0, model=tiny.model_fingerprint, method="random",
                            scales=[1.0] * FEATURES)
    dirs.save(tmp_path / "home" / "dictionaries" / "tiny-dirs")
    return tmp_path


@pytest.fixture
def make_app(home, tiny) -> Iterator[Any]:
    """``make_app(**options)``: an app over the tiny model (engines closed after the test)."""
    apps = []

    def make(**options: Any) -> Any:
        options.setdefault("styles_dir", home / "styles")
        limits = options.pop("limits", ServeLimits(max_tokens=32, default_tokens=8))
        app = create_app(tiny, limits=limits, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.engine.close(cancel=True)


@pytest.fixture
def client(make_app) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(make_app()) as c:
        yield c


def _feature_steering(i: int, weight: float = 3.0) -> dict[str, Any]:
    return {"features": [{"dictionary": "tiny-dirs", "feature": f"dir{i % FEATURES}",
                          "weight": weight}], "intensity": 1.0}


@pytest.fixture
def feature_steering() -> Any:
    """``feature_steering(i, weight=3.0)``: a ``steering`` field pushing feature ``i`` of tiny-dirs."""
    return _feature_steering


# -- the playground (tests/serve/test_playground*.py) ----------------------------------------------
@pytest.fixture(scope="session")
def tiny_media() -> dict[str, Any]:
    """The tiny random avatar and VITS models (the playground's image and voice tabs)."""
    from polysteer.plugins.image.adapter import DiffusersAdapter
    from polysteer.plugins.image.testing import tiny_avatar_pipeline
    from polysteer.plugins.voice.testing import tiny_vits_adapter

    return {"image": DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar"),
            "voice": tiny_vits_adapter()}


@pytest.fixture
def playground_app(home, tiny, tiny_media) -> Iterator[Any]:
    """An app over the tiny text model with the playground on the tiny image and voice models, and
    two saved styles: ``tiny-cheerful`` (a concept with a random realisation on each of the three
    models) and ``tiny-push`` (feature dir0 of tiny-dirs, text only)."""
    import yaml

    from polysteer.serve import PlaygroundConfig
    from polysteer.workflows import CreateConfig

    sites = {"text": SITE, "image": "up.1", "voice": "text_encoder.project"}
    adapters = {"text": tiny, **tiny_media}
    gen = torch.Generator().manual_seed(3)
    realisations = {}
    for modality, adapter in adapters.items():
        channels = adapter.bind(sites[modality]).channels
        ps.direction_set([torch.randn(channels, generator=gen)], ["up"], site=sites[modality],
                         site_norm=4.0, model=adapter.model_fingerprint, method="random (test)"
                         ).save(home / "home" / "dictionaries" / f"tiny-{modality}-up")
        realisations[modality] = {"dictionary": f"tiny-{modality}-up", "feature": "up", "weight": 4.0}
    styles = home / "styles"
    styles.mkdir(exist_ok=True)
    (styles / "tiny-cheerful.yaml").write_text(yaml.safe_dump({
        "name": "tiny-cheerful", "description": "a random direction on each tiny model",
        "concepts": {"cheerful": realisations},
        "components": [{"name": "cheerful", "concept": "cheerful", "weight": 1.0}]}))
    (styles / "tiny-push.yaml").write_text(yaml.safe_dump({
        "name": "tiny-push", "description": "feature dir0 of tiny-dirs",
        "components": [{"name": "push", "dictionary": "tiny-dirs", "feature": "dir0",
                        "weight": 3.0}]}))
    config = PlaygroundConfig(
        image_model=tiny_media["image"], voice_model=tiny_media["voice"],
        image_options={"num_inference_steps": 3},
        create_config=CreateConfig(text_options={"max_new_tokens": 10},
                                   image_options={"num_inference_steps": 3}, sentences_per_call=2,
                                   measures={"text": ["changed_fraction"],
                                             "image": ["image_brightness"],
                                             "voice": ["voice_loudness"]}))
    app = create_app(tiny, styles_dir=styles, playground=config,
                     limits=ServeLimits(max_tokens=32, default_tokens=12))
    yield app
    app.state.engine.close(cancel=True)
    for close in app.state.closers:
        close()
