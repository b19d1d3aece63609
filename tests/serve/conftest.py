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
